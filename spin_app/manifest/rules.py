"""Spin 3's rules and the pinned trigger plugins' rules, as checks of single values.

The keys each manifest table may hold, cron expressions (spin-trigger-cron), outbound hosts,
store labels, variable names and ``files`` sources: each function answers why a value breaks
its rule, or None. :mod:`active_data_flow.spin_app.manifest.validate` applies them to a whole manifest.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

from active_data_flow.spin_app.manifest.conventions import DEFAULT_CRON_EXPRESSION, rule_note, spin_id_problem

#: What an ``[application] name`` may be.
APP_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")

#: Keys Spin 3.4 accepts, per table.
TOP_KEYS = frozenset({"spin_manifest_version", "application", "variables", "trigger", "component"})
APPLICATION_KEYS = frozenset({"name", "version", "description", "authors", "targets", "trigger", "tool"})
VARIABLE_KEYS = frozenset({"default", "required", "secret", "description"})
COMPONENT_KEYS = frozenset({
    "source", "description", "variables", "environment", "files", "exclude_files", "allowed_http_hosts",
    "allowed_outbound_hosts", "key_value_stores", "sqlite_databases", "ai_models", "build", "tool",
    "dependencies_inherit_configuration", "dependencies",
})
BUILD_KEYS = frozenset({"command", "workdir", "watch"})
#: ``[[trigger.<kind>]]`` keys: Spin's own (id, component, components) plus the trigger's.
TRIGGER_KEYS: dict[str, frozenset[str]] = {
    "http": frozenset({"id", "component", "components", "route", "executor", "static_response"}),
    "redis": frozenset({"id", "component", "components", "channel", "address"}),
    "cron": frozenset({"id", "component", "cron_expression"}),
    "mqtt": frozenset({"id", "component", "topic", "qos"}),
}
#: ``[application.trigger.<kind>]`` keys; for mqtt every one is required.
APP_TRIGGER_KEYS: dict[str, frozenset[str]] = {
    "redis": frozenset({"address"}),
    "mqtt": frozenset({"address", "username", "password", "keep_alive_interval"}),
    "cron": frozenset(),
    "http": frozenset(),
}
#: The :data:`~active_data_flow.spin_app.manifest.conventions.RULES` key of each trigger kind.
TRIGGER_RULE = {"http": "http", "redis": "redis", "cron": "cron", "mqtt": "mqtt"}


def unknown_keys(table: Mapping[str, Any], allowed: Iterable[str]) -> list[str]:
    """The keys of ``table`` that are not ``allowed``, sorted."""
    return sorted(str(k) for k in table if k not in set(allowed))


# --------------------------------------------------------------------------- cron expressions


_CRON_FIELDS: tuple[tuple[str, int, int, tuple[str, ...]], ...] = (
    ("second", 0, 59, ()),
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day-of-month", 1, 31, ()),
    ("month", 1, 12, ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")),
    ("day-of-week", 0, 7, ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")),
)


def _cron_value(text: str, low: int, high: int, names: tuple[str, ...]) -> int | None:
    if text.isdigit():
        n = int(text)
        return n if low <= n <= high else None
    upper = text.upper()
    if upper in names:
        return names.index(upper) + (1 if low == 1 else 0)
    return None


def _cron_field_problem(index: int, field_: str) -> str | None:
    name, low, high, names = _CRON_FIELDS[index]
    for part in field_.split(","):
        if part in ("*",) or (part == "?" and name in ("day-of-month", "day-of-week")):
            continue
        base, slash, step = part.partition("/")
        if slash and (not step.isdigit() or int(step) == 0 or int(step) > high):
            return f"{name} {part!r}: the step after '/' must be a number from 1 to {high}"
        if name == "day-of-month" and not slash and (base == "L" or (base.endswith("W") and base[:-1].isdigit()
                                                                      and _cron_value(base[:-1], low, high, names))):
            continue
        if name == "day-of-week" and not slash:
            if base.endswith("L") and _cron_value(base[:-1], low, high, names) is not None:
                continue
            day, hash_, nth = base.partition("#")
            if hash_ and _cron_value(day, low, high, names) is not None and nth in ("1", "2", "3", "4", "5"):
                continue
        if base == "*" and slash:
            continue
        first, dash, last = base.partition("-")
        a = _cron_value(first, low, high, names)
        b = _cron_value(last, low, high, names) if dash else a
        allowed = f"{low}-{high}" + (f" or {names[0]}-{names[-1]}" if names else "")
        if a is None or b is None:
            return f"{name} {part!r}: values must be {allowed}"
        if a > b:
            return f"{name} {part!r}: the range runs backwards"
    return None


_DOM_EXTENSION = re.compile(r"(^|,)L($|,)|\dW($|,)")
_DOW_EXTENSION = re.compile(r"#|(\d|SUN|MON|TUE|WED|THU|FRI|SAT)L($|,)")


def _croner_extension(fields_: list[str]) -> bool:
    """Whether six fields use croner's ``L``, ``nW`` or ``n#k`` (beyond the project's cron syntax)."""
    return bool(_DOM_EXTENSION.search(fields_[3].upper()) or _DOW_EXTENSION.search(fields_[5].upper()))


def cron_expression_problem(expr: str) -> str | None:
    """Why the pinned spin-trigger-cron refuses ``expr`` at start-up, or None.

    Six fields: second minute hour day-of-month month day-of-week (0-7, 0 and 7 are Sunday, or
    SUN-SAT), each ``*``, a value, a range ``a-b``, a step ``*/n`` / ``a-b/n`` or a list of them;
    ``?`` in the day fields — the project's own cron syntax (:mod:`active_data_flow.cron`, which
    parses it) with seconds in front. croner's extensions beyond it (``L``/``nW`` in
    day-of-month, ``nL``/``n#k`` in day-of-week) are accepted too. No year field: croner
    refuses a seventh field.
    """
    from active_data_flow.cron import CronError, parse_cron

    fields_ = expr.split()
    if len(fields_) != 6:
        return (f"cron_expression {expr!r} has {len(fields_)} field(s); spin-trigger-cron needs 6 "
                f"(second minute hour day-of-month month day-of-week), e.g. {DEFAULT_CRON_EXPRESSION!r}")
    if not _croner_extension(fields_):
        try:
            parse_cron(expr)
        except CronError as exc:
            return f"cron_expression {expr!r}: {exc}"
        return None
    for i, f in enumerate(fields_):
        problem = _cron_field_problem(i, f)
        if problem:
            return f"cron_expression {expr!r}: {problem}"
    return None


def spin_cron_expression(expr: str, timezone: str | None = None) -> str:
    """``--cron-expression`` as spin-trigger-cron takes it: the heartbeat's five-field syntax
    (or a macro such as ``@hourly``) gets ``0`` seconds in front (:func:`active_data_flow.cron.to_spin_cron`),
    six fields are kept. An expression the parser refuses is kept as given, for the manifest
    check to refuse with its rule.

    The trigger evaluates its expression in UTC (``tokio_cron_scheduler::Job::new_async``, no
    time zone), so a ``timezone`` other than UTC is refused with a ``ValueError``: the cron
    component only ticks; a flow's own calendar in its zone belongs to the heartbeat."""
    from active_data_flow.cron import CronError, resolve_timezone, to_spin_cron

    if timezone is not None and resolve_timezone(timezone).utcoffset(None) != resolve_timezone("UTC").utcoffset(None):
        raise ValueError(
            f"the Spin cron trigger (spin-trigger-cron) reads its expression in UTC, not {timezone}: give the "
            "expression in UTC, or schedule the flow on the heartbeat with schedule: {cron, timezone}"
        )
    if len(expr.split()) == 6:
        return expr
    try:
        return to_spin_cron(expr)
    except CronError:
        return expr


# --------------------------------------------------------------------------- hosts, labels, names, files


_HOST_PART = r"(\*|\*\.[A-Za-z0-9.-]+|[A-Za-z0-9][A-Za-z0-9.-]*|\[[0-9A-Fa-f:]+\]|\d+\.\d+\.\d+\.\d+/\d+)"
_OUTBOUND_RE = re.compile(r"^(\*|[a-z][a-z0-9+.-]*)://" + _HOST_PART + r"(:(\*|\d+|\d+\.\.\d+))?/?$")


def outbound_host_problem(host: str) -> str | None:
    """Why Spin 3 refuses an ``allowed_outbound_hosts`` entry, or None (``{{ variable }}``
    entries are checked after their variables are resolved, by Spin)."""
    if "{{" in host:
        return None
    if not _OUTBOUND_RE.match(host):
        return f"{host!r} must be scheme://host[:port] (e.g. redis://cache:6379, https://*.example.com)"
    m = re.search(r":(\d+)(?:\.\.(\d+))?/?$", host)
    if m and any(int(p) > 65535 for p in m.groups() if p):
        return f"{host!r}: port out of range"
    return None


def label_problem(label: str) -> str | None:
    """Why a ``key_value_stores`` / ``sqlite_databases`` label is neither kebab-case nor snake_case."""
    kebab = spin_id_problem(label, "-", lower=False)
    snake = spin_id_problem(label, "_", lower=False)
    if kebab is None or snake is None:
        return None
    return f"label {label!r} must be kebab-case or snake_case ({kebab})"


def variable_name_problem(name: str) -> str | None:
    """Why ``name`` is not a Spin 3 variable name (lower_snake_case), naming the rule, or None."""
    problem = spin_id_problem(name, "_", lower=True)
    if problem is None:
        return None
    return f"variable name {name!r} is invalid: {problem} (lower_snake_case){rule_note('id')}"


def file_source_problem(source: str, base: str, *, pattern: bool) -> str | None:
    """Why a ``files`` source breaks the rule that mounted files lie inside the app directory."""
    posix = source.replace(os.sep, "/")
    if os.path.isabs(source) or posix.startswith("/") or re.match(r"^[A-Za-z]:[\\/]", source):
        return f"source {source!r} is an absolute path; give it relative to the manifest, inside the app directory"
    if ".." in posix.split("/"):
        return (f"source {source!r} is outside the application directory ('..'); copy the files into the app "
                "(`adf spin init` does) and mount them from there")
    if not pattern and not os.path.exists(os.path.join(base, source)):
        return f"source {source} does not exist (relative to the manifest: {os.path.join(base, source)})"
    return None
