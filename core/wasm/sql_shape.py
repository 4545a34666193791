"""Which tables one SQL statement reads and writes: the lexical classification ``adf.db_query``
checks its ``db:read`` / ``db:write`` permissions with (:func:`classify_sql`).

Strings, comments and quoted identifiers are understood; nothing is executed. SQLite
statements are checked again, exactly, by SQLite's authorizer when they run
(:func:`active_data_flow.wasm.host_db.run_sqlite`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["SqlShape", "classify_sql"]

_TOKEN = re.compile(
    r"""(?P<ws>\s+)
      | (?P<comment>--[^\n]*|/\*.*?\*/)
      | (?P<str>'(?:[^']|'')*'|[eE]'(?:[^'\\]|\\.|'')*'|\$(?P<tag>[A-Za-z_]*)\$.*?\$(?P=tag)\$)
      | (?P<qid>"(?:[^"]|"")*"|`(?:[^`]|``)*`|\[[^\]]*\])
      | (?P<word>[A-Za-z_][A-Za-z0-9_$]*)
      | (?P<num>\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)
      | (?P<param>[?]\d*|[:@$][A-Za-z0-9_]+|%s|%\([A-Za-z0-9_]+\)s)
      | (?P<op>.)""",
    re.S | re.X,
)
_READ_LEADERS = frozenset({"SELECT", "VALUES", "WITH", "EXPLAIN", "SHOW", "TABLE", "DESCRIBE", "DESC"})
#: keywords that make any statement a write, wherever they appear (REPLACE( is a function)
_WRITE_ANYWHERE = frozenset({"INSERT", "UPDATE", "DELETE", "REPLACE", "MERGE", "UPSERT", "TRUNCATE", "DROP",
                             "CREATE", "ALTER", "INTO", "GRANT", "REVOKE", "ATTACH", "DETACH", "COPY"})
_FROM_STOP = frozenset({
    "WHERE", "GROUP", "ORDER", "LIMIT", "JOIN", "LEFT", "RIGHT", "INNER", "OUTER", "CROSS", "FULL", "NATURAL",
    "ON", "UNION", "EXCEPT", "INTERSECT", "HAVING", "WINDOW", "OFFSET", "FETCH", "FOR", "RETURNING", "SET",
    "VALUES", "USING", "SELECT", "LATERAL", "STRAIGHT_JOIN", "QUALIFY", "INDEXED", "NOT", "TABLESAMPLE",
})
#: what may stand between INTO / UPDATE / TRUNCATE / DELETE FROM and its target
_TARGET_MODIFIERS = ("OR", "ROLLBACK", "ABORT", "FAIL", "IGNORE", "REPLACE", "ONLY", "TABLE",
                     "LOW_PRIORITY", "DELAYED", "HIGH_PRIORITY", "QUICK")
_OBJECT_KINDS = frozenset({"TABLE", "VIEW", "INDEX", "TRIGGER", "SEQUENCE", "SCHEMA", "DATABASE", "TYPE",
                           "FUNCTION", "PROCEDURE", "MATERIALIZED", "VIRTUAL", "TEMP", "TEMPORARY", "UNIQUE",
                           "UNLOGGED", "OR", "REPLACE", "IF", "NOT", "EXISTS", "ONLY", "GLOBAL", "LOCAL"})


@dataclass
class SqlShape:
    """What :func:`classify_sql` found: the tables read and written, and whether it writes."""

    writes: bool
    read_tables: set[str]
    write_tables: set[str]
    error: str | None = None


def _tokens(sql: str) -> list[tuple[str, str]] | str:
    out: list[tuple[str, str]] = []
    for m in _TOKEN.finditer(sql):
        kind = m.lastgroup or "op"
        if kind == "tag":
            kind = "str"
        if kind in ("ws", "comment"):
            continue
        text = m.group(kind) if kind != "str" else m.group(0)
        if kind == "op" and text in ("'", '"', "`", "["):
            return f"unterminated quote {text!r} in SQL"
        if kind == "op" and text == "/" and sql[m.end():m.end() + 1] == "*":
            return "unterminated comment in SQL"
        out.append((kind, text))
    return out


def _ident(tok: tuple[str, str]) -> str:
    kind, text = tok
    if kind == "qid":
        inner = text[1:-1]
        return inner.replace('""', '"') if text[0] == '"' else inner.replace("``", "`")
    return text.lower()


def _name_at(toks: list[tuple[str, str]], i: int, *, target: bool = False) -> tuple[str | None, int]:
    """A possibly qualified name starting at ``toks[i]`` -> (name, index after it). Unless
    ``target`` (a name followed by a column list), a name followed by ``(`` is a function."""
    if i >= len(toks) or toks[i][0] not in ("word", "qid"):
        return None, i
    parts = [_ident(toks[i])]
    i += 1
    while i + 1 < len(toks) and toks[i] == ("op", ".") and toks[i + 1][0] in ("word", "qid"):
        parts.append(_ident(toks[i + 1]))
        i += 2
    if not target and i < len(toks) and toks[i] == ("op", "("):  # a function call (table-valued function), not a table
        return None, i
    return ".".join(parts), i


def classify_sql(sql: str) -> SqlShape:
    """Which tables one SQL statement reads and writes, and whether it writes at all.

    A lexical parse (strings, comments and quoted identifiers understood): ``FROM`` / ``JOIN``
    lists are read; ``INSERT INTO`` / ``REPLACE INTO`` / ``UPDATE`` / ``DELETE FROM`` /
    ``MERGE INTO`` / ``TRUNCATE`` / ``CREATE|DROP|ALTER ... TABLE|VIEW|INDEX ... ON`` /
    ``SELECT ... INTO`` targets are written. A statement that does not start with SELECT,
    VALUES, WITH, EXPLAIN, SHOW, TABLE or DESCRIBE (PRAGMA, SET, CALL...), or that contains a
    write keyword anywhere, is a write. Unquoted names are lower-cased; CTE names are not
    tables. More than one statement is refused (``error``)."""
    toks = _tokens(sql)
    if isinstance(toks, str):
        return SqlShape(True, set(), set(), toks)
    while toks and toks[-1] == ("op", ";"):
        toks.pop()
    if not toks:
        return SqlShape(False, set(), set(), "empty SQL statement")
    if ("op", ";") in toks:
        return SqlShape(True, set(), set(), "only one SQL statement per db_query")
    words = [t[1].upper() if t[0] == "word" else "" for t in toks]
    writes = words[0] not in _READ_LEADERS or _has_write_keyword(toks, words)
    reads, written = _scan_tables(toks, words)
    ctes = _cte_names(toks, words)
    reads -= ctes
    written -= ctes
    reads -= written
    return SqlShape(writes or bool(written), reads, written)


def _has_write_keyword(toks: list[tuple[str, str]], words: list[str]) -> bool:
    """A write keyword anywhere (``REPLACE(`` is the function, not a write)."""
    return any(w in _WRITE_ANYWHERE and not (w == "REPLACE" and i + 1 < len(toks) and toks[i + 1] == ("op", "("))
               for i, w in enumerate(words))


def _cte_names(toks: list[tuple[str, str]], words: list[str]) -> set[str]:
    """The names ``WITH`` defines (``WITH a AS (...), b AS (...)``): queries, not tables."""
    return {_ident(toks[j]) for j in range(1, len(toks))
            if (words[j - 1] in ("WITH", "RECURSIVE") or toks[j - 1] == ("op", ",")) and _cte_ahead(toks, words, j)}


def _scan_tables(toks: list[tuple[str, str]], words: list[str]) -> tuple[set[str], set[str]]:
    """One pass over the tokens: the tables read (``FROM`` / ``JOIN`` / ``USING`` lists) and written
    (the targets of DML and DDL)."""
    reads: set[str] = set()
    written: set[str] = set()
    n = len(toks)
    parens: list[bool] = []  # per open parenthesis: does it hold a subquery (vs. function arguments)?
    i = 0
    while i < n:
        w = words[i]
        if toks[i] == ("op", "("):
            parens.append(i + 1 < n and words[i + 1] in ("SELECT", "WITH", "VALUES"))
            i += 1
            continue
        if toks[i] == ("op", ")"):
            if parens:
                parens.pop()
            i += 1
            continue
        in_function = bool(parens) and not parens[-1]  # EXTRACT(YEAR FROM d), TRIM(x FROM y)...
        if w in ("FROM", "JOIN", "USING") and not in_function and not _using_columns(toks, w, i):
            j = _read_list(toks, words, i, reads)
        elif w in ("INTO", "UPDATE", "TRUNCATE") or (w == "DELETE" and i + 1 < n and words[i + 1] == "FROM"):
            j = i + 1 if _update_clause(words, i) or in_function else _write_target(toks, words, i, written)
        elif w in ("CREATE", "DROP", "ALTER"):
            j = _ddl_target(toks, words, i, written)
        else:
            j = i + 1
        i = max(j, i + 1)
    return reads, written


def _using_columns(toks: list[tuple[str, str]], w: str, i: int) -> bool:
    """``USING (col, ...)`` of a join: columns, not a table list."""
    return w == "USING" and i + 1 < len(toks) and toks[i + 1] == ("op", "(")


def _update_clause(words: list[str], i: int) -> bool:
    """``SELECT ... FOR UPDATE``, ``ON CONFLICT DO UPDATE``, ``ON UPDATE CASCADE``: no target here."""
    return words[i] == "UPDATE" and i > 0 and words[i - 1] in ("FOR", "DO", "KEY", "NO", "ON")


def _read_list(toks: list[tuple[str, str]], words: list[str], i: int, reads: set[str]) -> int:
    """The tables after ``FROM`` (a comma list), ``JOIN`` or ``USING`` at ``i`` -> the index after them."""
    n = len(toks)
    w = words[i]
    j = i + 1
    while True:
        if j < n and words[j] == "ONLY":
            j += 1
        name, j = _name_at(toks, j)
        if name is not None:
            reads.add(name)
        if j < n and words[j] == "AS":  # an alias: [AS] name
            j += 1
        if j < n and toks[j][0] in ("word", "qid") and words[j] not in _FROM_STOP:
            j += 1
        if w == "FROM" and j < n and toks[j] == ("op", ","):
            j += 1
            continue
        break
    return j


def _write_target(toks: list[tuple[str, str]], words: list[str], i: int, written: set[str]) -> int:
    """The target of ``INTO`` / ``UPDATE`` / ``TRUNCATE`` / ``DELETE FROM`` at ``i`` -> the index after it."""
    n = len(toks)
    j = i + (2 if words[i] == "DELETE" else 1)
    while j < n and words[j] in _TARGET_MODIFIERS:
        j += 1
    target, j = _name_at(toks, j, target=True)
    if target is not None:
        written.add(target)
    return j


def _ddl_target(toks: list[tuple[str, str]], words: list[str], i: int, written: set[str]) -> int:
    """What ``CREATE`` / ``DROP`` / ``ALTER`` at ``i`` writes (for an index or a trigger: its table)
    -> the index after the object's name."""
    n = len(toks)
    w = words[i]
    j = i + 1
    kind = ""
    while j < n and words[j] in _OBJECT_KINDS:
        if words[j] in ("TABLE", "VIEW", "INDEX", "TRIGGER", "SEQUENCE"):
            kind = words[j]
        j += 1
    target, j = _name_at(toks, j, target=True)
    if kind in ("INDEX", "TRIGGER"):
        # CREATE INDEX name ON table / CREATE TRIGGER name ... ON table: the table is written
        k = j
        while k < n and words[k] != "ON":
            k += 1
        table = _name_at(toks, k + 1, target=True)[0] if k < n else None
        if table is not None:
            written.add(table)
        elif target is not None and w == "DROP":
            written.add(target)
    elif target is not None:
        written.add(target)
    return j


def _cte_ahead(toks: list[tuple[str, str]], words: list[str], j: int) -> bool:
    """``name [(cols)] AS (`` starts at ``j``."""
    n = len(toks)
    if j >= n or toks[j][0] not in ("word", "qid"):
        return False
    k = j + 1
    if k < n and toks[k] == ("op", "("):
        depth = 0
        while k < n:
            if toks[k] == ("op", "("):
                depth += 1
            elif toks[k] == ("op", ")"):
                depth -= 1
                if depth == 0:
                    break
            k += 1
        k += 1
    return k + 1 < n and words[k] == "AS" and (toks[k + 1] == ("op", "(") or words[k + 1] in ("NOT", "MATERIALIZED"))
