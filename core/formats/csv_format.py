"""The CSV reader: :func:`read_csv` and :func:`read_csv_header` over a
:class:`~active_data_flow.formats.lines.TextLines`, with its options (:class:`CsvOptions`).
"""

from __future__ import annotations

import csv
import io
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import accumulate, chain, islice
from typing import Any

from active_data_flow.errors import SourceDataError
from active_data_flow.formats.common import (
    DEFAULT_MAX_FIELD_BYTES,
    ReadResult,
    count_lines,
    excerpt,
    line_text,
)
from active_data_flow.formats.csv_framing import Dialect, dialect_for, record_end
from active_data_flow.formats.lines import TextLines
from active_data_flow.formats.origins import StartLines
from active_data_flow.record import DeadLetter

__all__ = [
    "CsvOptions",
    "read_csv",
    "read_csv_header",
]


@dataclass
class CsvOptions:
    """How a CSV file is parsed: ``header`` says whether the first row names the fields;
    ``columns`` names them explicitly (required without a header row, renames it with one)."""

    delimiter: str = ","
    quotechar: str = '"'
    header: bool = True
    columns: list[str] | None = None
    encoding: str = "utf-8"


def _raise_field_limit(limit: int) -> None:
    # csv.field_size_limit is one setting for the whole process (every csv reader, every
    # thread). The readers here enforce max_field_bytes themselves, in bytes, before the csv
    # module sees a longer field; they only need its limit (in characters, never more than the
    # bytes) not to be lower. So it is only ever raised — never lowered under another reader
    # that needs more — and left raised.
    if csv.field_size_limit() < limit:
        csv.field_size_limit(limit)


class _Feed:
    """Decoded lines for ``csv.reader``: the pending lines of a :class:`TextLines`, then more as
    the reader asks for them — never letting the record being read grow past ``src.limit``
    bytes. ``ends`` is kept by the caller: after each row returned, how many of the lines fed
    it has used (the record being read starts after ``ends[-1]``); without it (``None``) every
    record is taken to start at the first line fed, which cuts early but never late. When the
    lines stop,
    ``cut`` says the next record is longer than the limit and ``partial`` that the reader was
    inside a record: the row it returns then is not one, and ``stop`` is where it started."""

    __slots__ = ("_it", "bailed", "cut", "ends", "partial", "rows", "src", "stop")

    def __init__(self, src: TextLines, ends: list[int] | None, rows: Callable[[], int] | None = None) -> None:
        self.src = src
        self.ends = ends
        #: without ``ends``: how many rows the reader returned so far; while rows are lines, it
        #: equals the lines fed whenever more are asked for — else the feed stops (``bailed``)
        self.rows = rows
        self.bailed = False
        self.cut = False
        self.partial = False
        self.stop = 0
        self._it: Iterator[str] = chain.from_iterable(self._blocks())

    def __iter__(self) -> Iterator[str]:
        return self._it

    def _end(self, fed: int, cut: bool) -> None:
        self.stop = self.ends[-1] if self.ends else 0
        self.partial = self.stop < fed
        self.cut = cut

    def _blocks(self) -> Iterator[Iterable[str]]:
        src = self.src
        lines = src._lines
        start = src._pos
        limit = src.limit
        ends = self.ends
        fed = 0  # lines handed out
        fed_bytes = 0
        firsts = [0]  # the first line of each block handed out…
        befores = [0]  # …and the bytes before it
        rows = self.rows
        while True:
            if rows is not None and rows() != fed:  # a row took more than one line: stop betting
                self.bailed = True
                self._end(fed, False)
                return
            i = start + fed
            if i >= len(lines):
                if not src.more() and i >= len(lines):
                    self._end(fed, src.overlong)
                    return
                continue
            block = lines[i:]
            size = src._ready - fed_bytes  # every line after the ones fed is in this block
            mark = ends[-1] if ends else 0  # where the record being read starts
            b = bisect_right(firsts, mark) - 1  # the block it starts in
            if fed_bytes - befores[b] + size > limit:
                # the record may outgrow the limit within this block: count exactly, line by line
                here = befores[b] + sum(map(len, lines[start + firsts[b] : start + mark]))
                sizes = list(accumulate(map(len, block), initial=fed_bytes))
                k = bisect_right(sizes, here + limit) - 1
                if k <= 0:
                    self._end(fed, True)
                    return
                block = block[:k]
                size = sizes[k] - fed_bytes
            firsts.append(fed + len(block))
            befores.append(fed_bytes + size)
            fed += len(block)
            fed_bytes += size
            if rows is not None:
                yield map(src._decode, block)  # decoded as csv reads (text that does not decode: the pass is redone)
            else:
                texts = src.decoded(i + len(block))
                yield texts[i : i + len(block)]


def _touches(bad: dict[int, str], first: int, last: int) -> int:
    """The first line number in ``bad`` within ``[first, last]``, or 0."""
    hits = [n for n in bad if first <= n <= last]
    return min(hits) if hits else 0


def _read_csv(src: TextLines, max_records: int, path: str, options: CsvOptions, names: list[str] | None) -> ReadResult:
    """The CSV reader; ``names=None`` reads rows as lists whatever their width (the header).

    It reads in passes over the buffered lines: :func:`_fast_pass` bets that every row is one
    line; otherwise each row's lines are counted as the ``csv`` module returns it. A record that
    outgrows the limit, or that the end of the input cuts, is decided byte by byte
    (:func:`_csv_slow_record`), by the same rules the split boundaries are found with.
    """
    _raise_field_limit(src.limit)
    dialect = dialect_for(options.delimiter, options.quotechar)
    width = len(names) if names is not None else -1
    keys: list[str] = names or []
    what = "header" if options.header and not options.columns else "columns"
    records: list[Any] = []
    dead: list[DeadLetter] = []
    where: list[Sequence[int]] = []  # the first line of each record, pass by pass
    append = records.append
    while True:
        budget = max_records - len(records) - len(dead)
        if budget <= 0:
            break
        src.trim()
        if src.eof:
            break
        if width >= 0 and not src.multiline:
            fast = _fast_pass(src, budget, dialect, options, path, keys, width, what, records, dead)
            if fast is not None:
                where.append(fast)
                continue
        first = src.line
        before = len(records)
        ends: list[int] = []  # after each row: the lines of this pass it and the rows before used
        end = ends.append
        skipped: list[tuple[int, DeadLetter | None]] = []  # rows that are no record: (row, dead letter or None)
        feed = _Feed(src, ends)
        reader = csv.reader(feed, delimiter=options.delimiter, quotechar=options.quotechar)
        try:
            for row in islice(reader, budget):
                end(reader.line_num)
                if len(row) == width:
                    append(dict(zip(keys, row, strict=True)))
                elif width < 0 and row:
                    append(row)
                else:
                    letter = None
                    if row:
                        reason = f"CSV row has {len(row)} fields, {what} has {width}"
                        letter = DeadLetter(_csv_text(row, options), reason, "source", "ValueError", {"file": path})
                    skipped.append((len(ends) - 1, letter))
        except csv.Error:
            feed.cut = True  # the csv module gave up inside a record (its limit lowered elsewhere?): decide in bytes
            feed.stop = ends[-1] if ends else 0
        if (feed.partial or feed.cut) and ends and ends[-1] > feed.stop:
            # the lines ran out inside a record: the row csv made of them (the last) is not one
            if skipped and skipped[-1][0] == len(ends) - 1:
                skipped.pop()
            else:
                records.pop()
            ends.pop()
        used = ends[-1] if ends else 0
        if skipped or (src.bad and _touches(src.bad, first, first + used - 1)):
            where.append(_sort_out(src, path, records, before, ends, skipped, dead))
        else:
            where.append(StartLines(first, ends))
        src.consume(used)
        if feed.cut or feed.partial:
            where.append(_csv_slow_record(src, dialect, options, path, keys, width, what, records, dead))
    lines: Sequence[int] = where[0] if len(where) == 1 else [n for seq in where for n in seq]
    return ReadResult(records, dead, src.offset, src.line, src.at_end(), lines)


def _fast_pass(
    src: TextLines,
    budget: int,
    dialect: Dialect,
    options: CsvOptions,
    path: str,
    keys: list[str],
    width: int,
    what: str,
    records: list[Any],
    dead: list[DeadLetter],
) -> Sequence[int] | None:
    """A pass that counts no lines per row, on the bet that every row is one line (the usual CSV
    file); the bet is checked afterwards — rows returned against lines used — and when it is lost
    nothing of the pass is kept (``None``: the lines are still buffered, the caller reads them
    again counting). Returns the first line of each record."""
    before = len(records)
    first = src.line
    skipped: list[tuple[int, list[str]]] = []  # (row, fields) of the rows that are no record
    feed = _Feed(src, None, lambda: len(records) - before + len(skipped))
    reader = csv.reader(feed, delimiter=options.delimiter, quotechar=options.quotechar)
    append = records.append
    try:
        for row in islice(reader, budget):
            if len(row) == width:
                append(dict(zip(keys, row, strict=True)))
            else:
                skipped.append((len(records) - before + len(skipped), row))
    except (csv.Error, UnicodeDecodeError):
        del records[before:]  # the careful pass says which record and why
        return None
    used = reader.line_num
    rows = len(records) - before + len(skipped)
    if rows != used or feed.bailed or feed.cut or (src.bad and _touches(src.bad, first, first + used - 1)):
        del records[before:]
        if rows != used or feed.bailed or feed.cut:
            src.multiline = True
        return None
    partial = False
    if feed.partial and rows:
        # the input ended: the last line is a record only if no quoted field is open in it
        raw = src._lines[src._pos + rows - 1]
        status, end = record_end(raw, 0, False, dialect, src.limit)
        if status != "ok" or end != len(raw):
            partial = True
            if skipped and skipped[-1][0] == rows - 1:
                skipped.pop()
            else:
                records.pop()
            used -= 1
    lines: Sequence[int] = range(first, first + used)
    if skipped:
        offsets = src.offsets(used)
        for index, fields in skipped:
            if fields:
                reason = f"CSV row has {len(fields)} fields, {what} has {width}"
                origin = {"file": path, "line": first + index, "offset": offsets[index]}
                dead.append(DeadLetter(_csv_text(fields, options), reason, "source", "ValueError", origin))
        gone = {index for index, _ in skipped}
        lines = [first + k for k in range(used) if k not in gone]
    src.consume(used)
    if partial:
        lines = [*lines, *_csv_slow_record(src, dialect, options, path, keys, width, what, records, dead)]
    return lines


def _sort_out(
    src: TextLines,
    path: str,
    records: list[Any],
    before: int,
    ends: list[int],
    skipped: list[tuple[int, DeadLetter | None]],
    dead: list[DeadLetter],
) -> list[int]:
    """A pass with rows that are no record, or with text that did not decode: the dead letters get
    their line and offset, records on lines that do not decode become dead letters too, and the
    first line of every record is returned."""
    first = src.line
    offsets = src.offsets(ends[-1] if ends else 0)
    not_records = dict(skipped)
    kept: list[Any] = []
    lines: list[int] = []
    got = iter(records[before:])
    for row, stop in enumerate(ends):
        start = ends[row - 1] if row else 0
        letter = not_records.get(row)
        if row not in not_records:
            record = next(got)
            if src.bad and _touches(src.bad, first + start, first + stop - 1):
                letter = _undecodable(src, start, stop, src.bad, path)
            else:
                kept.append(record)
                lines.append(first + start)
                continue
        if letter is not None:
            letter.origin.update(line=first + start, offset=offsets[start])
            dead.append(letter)
    records[before:] = kept
    return lines


def _undecodable(src: TextLines, i: int, j: int, bad: dict[int, str], path: str) -> DeadLetter:
    """The record on buffered lines ``[i, j)`` of this pass, as a dead letter for text that does not decode."""
    first = src.line + i
    hit = _touches(bad, first, src.line + j - 1)
    reason = bad[hit] if hit == first else f"{bad[hit]} on line {hit}"
    raw = b"".join(src._lines[src._pos + i : src._pos + j])
    return DeadLetter(line_text(raw, src.encoding), reason, "source", "UnicodeDecodeError", {"file": path})


def _csv_slow_record(
    src: TextLines,
    d: Dialect,
    options: CsvOptions,
    path: str,
    keys: list[str],
    width: int,
    what: str,
    records: list[Any],
    dead: list[DeadLetter],
) -> list[int]:
    """One record decided byte by byte: longer than the limit, or cut short by the end of the input.
    Returns its first line when it is a record."""
    limit = src.limit
    data, eof = src.window(limit + 1)
    if not data:
        return []
    while True:
        status, value = record_end(data, 0, eof, d, limit)
        if status != "more":
            break
        data, eof = src.window(value)
    origin = {"file": path, "line": src.line, "offset": src.offset}
    if status == "ok":
        k = bisect_right(list(accumulate(map(len, src._lines[src._pos :]))), value)
        texts = src.decoded(src._pos + k)[src._pos : src._pos + k]
        hit = _touches(src.bad, src.line, src.line + k - 1) if src.bad else 0
        try:
            rows = [row for row in csv.reader(texts, delimiter=options.delimiter, quotechar=options.quotechar) if row]
        except csv.Error as exc:
            letter = DeadLetter(excerpt(data[:value], src.encoding), f"CSV error: {exc}", "source", "csv.Error", origin)
            dead.append(letter)
            src.consume(k)
            return []
        line = []
        if hit:
            letter = _undecodable(src, 0, k, src.bad, path)
            letter.origin.update(line=src.line, offset=src.offset)
            dead.append(letter)
        elif len(rows) == 1 and (len(rows[0]) == width or width < 0):
            records.append(dict(zip(keys, rows[0], strict=True)) if width >= 0 else rows[0])
            line = [src.line]
        elif rows:
            reason = f"CSV row has {len(rows[0])} fields, {what} has {width}"
            if len(rows) > 1:  # not one record after all: kept whole rather than any row dropped
                reason = f"CSV error: the record reads as {len(rows)} rows"
            dead.append(DeadLetter(excerpt(data[:value], src.encoding), reason, "source", "ValueError", origin))
        src.consume(k)
        return line
    if status == "eof" and src.beyond is not None and not src._unit:
        # the range ends inside the field: the rest of the file says whether it is too long or never closed
        more = src.beyond(value + limit + 1 - len(data))
        status = record_end(data + more, 0, len(data) + len(more) < value + limit + 1, d, limit)[0]
        status = "long" if status == "long" else "eof"
    opened = src.line + count_lines(data, 0, value)
    if status == "eof":
        reason = f"unterminated quoted field opened on line {opened}"
    elif data[value] == d.quote:
        reason = f"quoted field opened on line {opened} is longer than max_field_bytes ({limit} bytes)"
    else:
        reason = f"field on line {opened} is longer than max_field_bytes ({limit} bytes)"
    found = [i for i in (data.find(b"\n", value), data.find(b"\r", value)) if i >= 0]
    line_end = min(found) + 1 if found else len(data)
    text = excerpt(data[:line_end], src.encoding, not found and not eof)
    dead.append(DeadLetter(text, reason, "source", "ValueError", origin))
    src.skip_through(value)
    return []


def read_csv(
    src: TextLines,
    max_records: int,
    *,
    path: str,
    fieldnames: Sequence[str],
    options: CsvOptions,
) -> ReadResult:
    """Read up to ``max_records`` CSV rows from ``src`` as dicts keyed by ``fieldnames``.

    ``src`` must be at a record start. Blank lines are skipped; a row with another number of
    fields than ``fieldnames``, text that does not decode, an unterminated quoted field or a
    field longer than ``src.limit`` becomes a dead letter (see the module doc).
    """
    return _read_csv(src, max_records, path, options, list(fieldnames))


def read_csv_header(
    stream: TextLines | io.BufferedReader,
    options: CsvOptions,
    *,
    path: str = "",
    limit: int = DEFAULT_MAX_FIELD_BYTES,
) -> tuple[list[str], int]:
    """Read the header row at the stream's position (offset 0, after any byte-order mark).

    Returns the field names (``options.columns`` when given) and the number of lines the
    header took, blank lines before it included (0 when the file is empty). Without a header
    row, returns ``options.columns`` and 0 without reading. A header row that cannot be read
    raises :class:`~active_data_flow.errors.SourceDataError`.
    """
    if not options.header:
        return list(options.columns or []), 0
    src = stream if isinstance(stream, TextLines) else TextLines(
        stream, offset=stream.tell(), encoding=options.encoding, limit=limit
    )
    before = src.line
    res = _read_csv(src, 1, path, options, None)
    if res.dead_letters:
        letter = res.dead_letters[0]
        raise SourceDataError(
            f"{path or 'CSV input'}: the header row on line {letter.origin.get('line')} cannot be read: "
            f"{letter.reason}; fix the file, or set 'header: false' and name the fields with 'columns'"
        )
    names = [str(n) for n in res.records[0]] if res.records else []
    if options.columns:
        names = list(options.columns)
    return names, src.line - before


def _csv_text(row: list[str], options: CsvOptions) -> str:
    # The row as CSV text again (re-quoted: the reader does not keep the raw bytes). The
    # writer quotes fields containing its line terminator's characters, so keep "\r\n".
    buf = io.StringIO()
    csv.writer(buf, delimiter=options.delimiter, quotechar=options.quotechar, lineterminator="\r\n").writerow(row)
    return buf.getvalue()[:-2]
