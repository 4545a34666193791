"""Hostile input for the file source: generated (hypothesis) and hand-picked (tests/corpus/).

Every file is built from *good* lines, whose records the test knows, and *bad* lines, whose
position it knows; it goes through the engine (parallelism 1, and also cut into small byte
ranges) and must come out with every good line exactly once, every bad line as a dead letter
at its line number and byte offset, nothing else, and records in = out + dead letters. A
reader restored from a checkpoint taken after a random batch must read exactly the rest.

The generated corpus is deterministic (``derandomize=True``, no example database), so the
suite never flakes; the examples cover quotes (stray, doubled, unterminated), fields with line
ends, fields around ``max_field_bytes``, NUL bytes, invalid UTF-8 / UTF-16 / UTF-32, byte-order
marks, LF / CRLF / CR and mixed line ends, blank lines, truncated last lines and duplicate headers.
"""

from __future__ import annotations

import codecs
import io
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from active_data_flow.connectors.file import FileSource
from active_data_flow.engine import run_flow
from active_data_flow.formats import aligned_boundaries, count_lines
from active_data_flow.source import DetachedReaderContext, ReaderStatus

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"

SETTINGS = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=1200,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)

BOMS = {
    "utf-8": b"",
    "utf-8-bom": codecs.BOM_UTF8,
    "utf-16-le": codecs.BOM_UTF16_LE,
    "utf-16-be": codecs.BOM_UTF16_BE,
    "utf-32-le": codecs.BOM_UTF32_LE,
    "utf-32-be": codecs.BOM_UTF32_BE,
}
ENDS = {"lf": ["\n"], "crlf": ["\r\n"], "cr": ["\r"], "mixed": ["\n", "\r\n", "\r"]}
#: UTF-8 more often: a UTF-16/32 file is never cut into byte ranges
ENCODINGS = ["utf-8", "utf-8", "utf-8", "utf-8-bom", "utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be"]


@dataclass
class Built:
    """A generated file and what reading it must give."""

    data: bytes
    records: list[dict[str, Any]] = field(default_factory=list)
    bad: list[tuple[int, int]] = field(default_factory=list)  # (line, byte offset) of each dead letter
    options: dict[str, Any] = field(default_factory=dict)
    error: str | None = None  # the run must fail with this in its error


class Writer:
    """Appends lines in one encoding, keeping the line number and byte offset of each."""

    def __init__(self, encoding: str) -> None:
        self.codec = encoding.removesuffix("-bom")
        self.out = bytearray(BOMS[encoding])
        self.text = ""  # the text so far (for line numbers)
        self.after_cr = False

    def where(self) -> tuple[int, int]:
        return count_lines(self.text.encode("utf-8")) + 1, len(self.out)

    def add(self, text: str, raw: bytes | None = None) -> None:
        self.out += raw if raw is not None else text.encode(self.codec)
        self.text += text
        self.after_cr = text.endswith("\r")

    def end(self, ending: str) -> None:
        if self.after_cr and ending == "\n":  # "\r" + "\n" would be one line end
            ending = "\r\n"
        self.add(ending)


def _quote(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


def _bad_text(codec: str, before: str, after: str) -> tuple[str, bytes]:
    """``before`` + bytes that do not decode in ``codec`` + ``after`` (the text stands for the bad bytes)."""
    junk = {"utf-8": b"\xff\xfe", "utf-16-le": b"\x00\xd8", "utf-16-be": b"\xd8\x00",
            "utf-32-le": b"\x00\x00\x11\x00", "utf-32-be": b"\x00\x11\x00\x00"}[codec]
    return before + "?" + after, before.encode(codec) + junk + after.encode(codec)


# --------------------------------------------------------------------------- strategies

TOKENS = ["a", "Z", "é", "😀", " ", ",", '"', '""', "\n", "\r", "\r\n", "\x00", "\t", "'", "\u2028", "\\"]
field_text = st.lists(st.sampled_from(TOKENS), max_size=12).map("".join)
plain_text = st.lists(st.sampled_from(["a", "Z", "é", " ", "\x00", '"', "x'"]), max_size=8).map("".join)
json_scalars = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=12) | st.floats(
    allow_nan=False, allow_infinity=False
)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3), max_leaves=6)


@st.composite
def csv_files(draw: st.DrawFn) -> Built:
    encoding = draw(st.sampled_from(ENCODINGS))
    ends = ENDS[draw(st.sampled_from(list(ENDS)))]
    limit = draw(st.sampled_from([40, 120, 64 << 20]))
    w = Writer(encoding)
    built = Built(b"", options={"max_field_bytes": limit})
    if draw(st.integers(0, 19)) == 0:
        w.add(draw(st.sampled_from(["id,id", "id,text,text", "id,,"])))
        w.end("\n")
        w.add("1,2")
        built.data = bytes(w.out)
        built.error = "more than once"
        return built
    w.add("id,text")
    w.end(draw(st.sampled_from(ends)))
    kinds = draw(st.lists(st.sampled_from(["good"] * 6 + ["stray", "width", "blank", "invalid", "long", "open"]), max_size=25))
    for n, kind in enumerate(kinds):
        last = n == len(kinds) - 1
        line, offset = w.where()
        ident = str(n)
        if kind == "good":
            text = draw(field_text)
            cell = _quote(text) if draw(st.booleans()) or any(c in text for c in ',"\r\n') else text
            if len(cell.encode("utf-8")) > limit:
                cell, text = _quote("short"), "short"
            w.add(f"{ident},{cell}")
            built.records.append({"id": ident, "text": text})
        elif kind == "stray":  # a quote inside an unquoted field is text, as in the csv module
            text = "x" + draw(plain_text)
            w.add(f"{ident},{text}")
            built.records.append({"id": ident, "text": text})
        elif kind == "width":
            w.add(draw(st.sampled_from([f"{ident},a,b", ident, f'{ident},"two\nlines",c', "   "])))
            built.bad.append((line, offset))
        elif kind == "blank":
            pass
        elif kind == "invalid":
            text, raw = _bad_text(w.codec, f'{ident},"caf', 'é\nsecond line"')
            w.add(text, raw)
            built.bad.append((line, offset))
        elif kind == "long" and limit < 1000:
            w.add(f'{ident},"' + "L" * limit + '"' if draw(st.booleans()) else f"{ident}," + "U" * (limit + 1))
            built.bad.append((line, offset))
        elif kind == "open" and (last or limit < 1000):
            # never closed within max_field_bytes: a tail of quote-free lines (or the end of the file)
            w.add(f'{ident},"opened')
            built.bad.append((line, offset))
            if not last:
                filler = max(limit // 3, 1)
                for k in range(4):
                    w.end(draw(st.sampled_from(ends)))
                    fid = f"{n}f{k}"
                    w.add(f"{fid}," + "f" * filler)
                    built.records.append({"id": fid, "text": "f" * filler})
        else:
            w.add(f"{ident},ok")
            built.records.append({"id": ident, "text": "ok"})
        if not last or draw(st.booleans()):
            w.end(draw(st.sampled_from(ends)))
    built.data = bytes(w.out)
    return built


@st.composite
def jsonl_files(draw: st.DrawFn) -> Built:
    encoding = draw(st.sampled_from(ENCODINGS))
    ends = ENDS[draw(st.sampled_from(list(ENDS)))]
    limit = draw(st.sampled_from([200, 64 << 20]))
    w = Writer(encoding)
    built = Built(b"", options={"max_field_bytes": limit})
    kinds = draw(st.lists(st.sampled_from(["good"] * 6 + ["syntax", "scalar", "nul", "blank", "invalid", "long", "cut"]), max_size=25))
    for n, kind in enumerate(kinds):
        last = n == len(kinds) - 1
        line, offset = w.where()
        if kind == "good":
            record = {"id": n, "v": draw(json_values)}
            text = json.dumps(record, ensure_ascii=draw(st.booleans()))
            if len(text.encode("utf-8")) > limit:
                record, text = {"id": n, "v": None}, json.dumps({"id": n, "v": None})
            w.add(text)
            built.records.append(record)
        elif kind == "syntax":
            w.add(draw(st.sampled_from([f'{{"id": {n},,}}', f'{{"id": {n}', "{'single': 1}", "nul", "{]"])))
            built.bad.append((line, offset))
        elif kind == "scalar":
            w.add(draw(st.sampled_from([f"[{n}]", '"text"', "42", "null", "true"])))
            built.bad.append((line, offset))
        elif kind == "nul":
            w.add(f'{{"id": {n}, "v": "a\x00b"}}')
            built.bad.append((line, offset))
        elif kind == "blank":
            w.add(draw(st.sampled_from(["", "   ", "\t"])))
        elif kind == "invalid":
            text, raw = _bad_text(w.codec, f'{{"id": {n}, "v": "caf', '"}')
            w.add(text, raw)
            built.bad.append((line, offset))
        elif kind == "long" and limit < 1000:
            w.add(json.dumps({"id": n, "v": "L" * limit}))
            built.bad.append((line, offset))
        elif kind == "cut" and last:
            w.add(f'{{"id": {n}, "v": [1, 2')
            built.bad.append((line, offset))
            break
        else:
            w.add(json.dumps({"id": n}))
            built.records.append({"id": n})
        if not last or draw(st.booleans()):
            w.end(draw(st.sampled_from(ends)))
    built.data = bytes(w.out)
    return built


@st.composite
def json_files(draw: st.DrawFn) -> Built:
    encoding = draw(st.sampled_from(list(BOMS)))
    codec = encoding.removesuffix("-bom")
    elements = draw(st.lists(st.one_of(st.builds(dict, id=st.integers(0, 10**6), v=json_values), json_scalars), max_size=20))
    text = json.dumps(elements, indent=draw(st.sampled_from([None, 1])), ensure_ascii=draw(st.booleans()))
    built = Built(b"")
    if draw(st.integers(0, 4)) == 0:  # truncated: one dead letter for the whole file
        text = text[: len(text) // 2]
        built.bad = [(-1, -1)]
    else:
        built.records = [e for e in elements if isinstance(e, dict)]
        built.bad = [(i, -1) for i, e in enumerate(elements) if not isinstance(e, dict)]
    built.data = BOMS[encoding] + text.encode(codec)
    return built


# --------------------------------------------------------------------------- checks


def _engine(path: Path, fmt: str, options: dict[str, Any], state: Path, batch: int) -> tuple[Any, list[Any], list[Any]]:
    out = state / f"out-{len(list(state.iterdir()))}.jsonl"
    spec = {
        "name": "hostile",
        "source": {"type": "file", "path": str(path), "format": fmt, **options},
        "sink": {"type": "file", "path": str(out)},
        "runtime": {"batch_size": batch, "parallelism": 1},
    }
    summary = run_flow(spec, state_dir=str(state / "state"), resume=False)
    records = [json.loads(x) for x in out.read_bytes().splitlines()] if out.exists() else []  # bytes: not on U+2028
    letters_file = Path(summary.dead_letter_destination or state / "none")
    letters = [json.loads(x) for x in letters_file.read_bytes().splitlines()] if letters_file.is_file() else []
    return summary, records, letters


def _check(built: Built, fmt: str, tmp: Path, batch: int = 7, split_bytes: int | None = None) -> None:
    path = tmp / f"input.{fmt}"
    path.write_bytes(built.data)
    options = dict(built.options)
    if split_bytes:
        options["split_bytes"] = split_bytes
    summary, records, letters = _engine(path, fmt, options, tmp, batch)
    if built.error is not None:
        assert summary.status == "failed"
        assert summary.error is not None and built.error in summary.error and str(path) in summary.error
        return
    # a run whose every record is dead-lettered counts as failed (the engine's rule): only then
    rejected_all = not built.records and bool(built.bad)
    assert summary.status in (("failed",) if rejected_all else ("success", "partial")), summary.error
    assert records == built.records
    assert all(d["stage"] == "source" and d["origin"]["file"] == str(path) for d in letters)
    if fmt == "json":
        got = [d["origin"].get("index", -1) for d in letters]
        assert got == [i for i, _ in built.bad]
    else:
        assert [(d["origin"]["line"], d["origin"]["offset"]) for d in letters] == built.bad
    assert summary.records_out == len(built.records) and summary.dead_letters == len(built.bad)
    assert summary.records_in == summary.records_out + summary.dead_letters


def _check_resume(built: Built, fmt: str, tmp: Path, batch: int, after: int, split_bytes: int | None) -> None:
    """A reader restored from the checkpoint after ``after`` batches reads exactly the rest."""
    if built.error is not None:
        return
    path = tmp / f"input.{fmt}"
    options = dict(built.options, split_bytes=split_bytes) if split_bytes else dict(built.options)
    src = FileSource(path=str(path), format=fmt, **options)
    splits = [src.split_from_dict(s.to_dict()) for s in src.splits_of(str(path), len(built.data))]
    reader = src.create_reader(DetachedReaderContext())
    reader.add_splits(splits)
    reader.notify_no_more_splits()
    got: list[Any] = []
    dead = 0
    done = False
    for _ in range(after):
        b = reader.poll_batch(batch)
        got += b.records
        dead += len(b.dead_letters)
        if b.status is ReaderStatus.END_OF_INPUT:
            done = True
            break
    snapshot = [json.loads(json.dumps(s.to_dict())) for s in reader.snapshot_state()]
    reader.close()
    if not done:
        reader = src.create_reader(DetachedReaderContext())
        reader.add_splits([src.split_from_dict(d) for d in snapshot])
        reader.notify_no_more_splits()
        while True:
            b = reader.poll_batch(batch + 1)
            got += b.records
            dead += len(b.dead_letters)
            if b.status is ReaderStatus.END_OF_INPUT:
                break
        reader.close()
    assert got == built.records
    assert dead == len(built.bad)


@SETTINGS
@given(built=csv_files(), batch=st.integers(1, 20), split_bytes=st.sampled_from([None, None, 1, 23, 64, 150]), after=st.integers(1, 4))
def test_generated_csv_files(built: Built, batch: int, split_bytes: int | None, after: int) -> None:
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        _check(built, "csv", tmp, batch)
        if split_bytes:
            _check(built, "csv", tmp, batch, split_bytes)
        _check_resume(built, "csv", tmp, batch, after, split_bytes)


@SETTINGS
@given(built=jsonl_files(), batch=st.integers(1, 20), split_bytes=st.sampled_from([None, None, 1, 23, 64, 150]), after=st.integers(1, 4))
def test_generated_jsonl_files(built: Built, batch: int, split_bytes: int | None, after: int) -> None:
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        _check(built, "jsonl", tmp, batch)
        if split_bytes:
            _check(built, "jsonl", tmp, batch, split_bytes)
        _check_resume(built, "jsonl", tmp, batch, after, split_bytes)


@settings(SETTINGS, max_examples=800)
@given(built=csv_files())
def test_generated_csv_boundaries_for_every_split_size_are_record_starts(built: Built) -> None:
    # With split_bytes=1 every record start is a boundary (found one record at a time); every other
    # split size, read in any chunk size, may only pick among those — whatever the quotes do.
    if built.error is not None or built.data[:2] in (b"\xff\xfe", b"\xfe\xff") or built.data[:4] == codecs.BOM_UTF32_BE:
        return  # UTF-16/32 files are not cut
    data = built.data
    limit = built.options["max_field_bytes"]
    starts = set(aligned_boundaries(io.BytesIO(data), len(data), 1, quotechar='"', max_field_bytes=limit))
    for split_bytes in range(2, len(data), max(1, len(data) // 60)):
        for chunk in (5, 64, 1 << 22):
            got = aligned_boundaries(io.BytesIO(data), len(data), split_bytes, quotechar='"', max_field_bytes=limit, chunk_size=chunk)
            assert set(got) <= starts, (split_bytes, chunk)


@settings(SETTINGS, max_examples=300)
@given(built=json_files(), batch=st.integers(1, 10))
def test_generated_json_array_files(built: Built, batch: int) -> None:
    with tempfile.TemporaryDirectory() as name:
        _check(built, "json", Path(name), batch)


# --------------------------------------------------------------------------- the hand-picked corpus


EXPECTED: dict[str, Any] = json.loads((CORPUS / "expected.json").read_text())


@pytest.mark.parametrize("name", sorted(EXPECTED))
@pytest.mark.parametrize("split_bytes", [None, 24])
def test_corpus_file(name: str, split_bytes: int | None, tmp_path: Path) -> None:
    case = EXPECTED[name]
    built = Built(
        (CORPUS / name).read_bytes(),
        records=case.get("records", []),
        bad=[tuple(x) for x in case.get("bad", [])],  # type: ignore[misc]
        options=case.get("options", {}),
        error=case.get("error"),
    )
    fmt = name.rsplit(".", 1)[1].replace("tsv", "csv")
    (tmp_path / f"input.{fmt}").write_bytes(built.data)
    _check(built, fmt, tmp_path, batch=3, split_bytes=split_bytes)
    if fmt != "json":
        _check_resume(built, fmt, tmp_path, batch=2, after=2, split_bytes=split_bytes)


@pytest.mark.parametrize("split_bytes", [None, 100_000])
def test_corpus_long_fields_generated_at_test_time(split_bytes: int | None, tmp_path: Path) -> None:
    blob = json.dumps({"rows": [[i, "é" * 10] for i in range(6000)]})  # quotes to double, multi-byte text
    assert len(blob) > 131_072  # past the csv module's default field limit
    big = blob + blob
    limit = (len(_quote(blob).encode()) + len(_quote(big).encode())) // 2
    lines = ["id,text", f"1,{_quote(blob)}", f"2,{_quote(big)}", '3,"unterminated', "4,after"]
    data = ("\r\n".join(lines) + "\r\n").encode()
    built = Built(
        data,
        records=[{"id": "1", "text": blob}, {"id": "4", "text": "after"}],
        bad=[(3, data.index(b"\r\n2,") + 2), (4, data.index(b'\r\n3,"') + 2)],
        options={"max_field_bytes": limit},
    )
    _check(built, "csv", tmp_path, batch=2, split_bytes=split_bytes)
