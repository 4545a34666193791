"""core.formats: CSV / JSON array / JSON Lines parsing on real files, dead letters, split boundaries."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest

from core.formats import (
    CsvEncoder,
    CsvOptions,
    aligned_boundaries,
    encode_jsonl,
    format_from_path,
    normalize_encoding,
    open_range,
    read_csv,
    read_csv_header,
    read_json_array,
    read_jsonl,
    skip_bom,
    split_json_elements,
)
from core.splits import DeadLetter


def _stream(path: Path, start: int = 0, end: int | None = None) -> io.BufferedReader:
    return open_range(open(path, "rb", buffering=0), start, end)


def _header(path: Path, options: CsvOptions) -> list[str]:
    with _stream(path) as s:
        skip_bom(s)
        return read_csv_header(s, options)[0]


def _read_csv_file(
    path: Path, options: CsvOptions | None = None, batch: int = 1000, start: int = 0, end: int | None = None,
    line: int = 1,
) -> tuple[list[dict[str, Any]], list[DeadLetter]]:
    options = options or CsvOptions()
    names = _header(path, options)
    records: list[dict[str, Any]] = []
    dead: list[DeadLetter] = []
    with _stream(path, start, end) as stream:
        if start == 0:
            skip_bom(stream)
            line += read_csv_header(stream, options)[1]
        while True:
            res = read_csv(stream, batch, path=str(path), line=line, fieldnames=names, options=options)
            records += res.records
            dead += res.dead_letters
            line = res.line
            if res.eof:
                return records, dead


def _read_jsonl_file(
    path: Path, batch: int = 1000, start: int = 0, end: int | None = None, line: int = 1
) -> tuple[list[dict[str, Any]], list[DeadLetter], int]:
    records: list[dict[str, Any]] = []
    dead: list[DeadLetter] = []
    with _stream(path, start, end) as stream:
        if start == 0:
            skip_bom(stream)
        while True:
            res = read_jsonl(stream, batch, path=str(path), line=line)
            records += res.records
            dead += res.dead_letters
            line = res.line
            if res.eof:
                return records, dead, line


# --------------------------------------------------------------------------- CSV


def test_csv_rfc4180_quoting_bom_and_multiline_fields(tmp_path: Path) -> None:
    p = tmp_path / "a.csv"
    p.write_bytes(
        b'\xef\xbb\xbfid,name,note\r\n'
        b'1,"Smith, John","line one\r\nline two"\r\n'
        b'2,"say ""hi""",plain\r\n'
        b'3,,"ends with quote """\r\n'
    )
    records, dead = _read_csv_file(p)
    assert dead == []
    assert records == [
        {"id": "1", "name": "Smith, John", "note": "line one\r\nline two"},
        {"id": "2", "name": 'say "hi"', "note": "plain"},
        {"id": "3", "name": "", "note": 'ends with quote "'},
    ]


def test_csv_header_less_with_columns_delimiter_and_quotechar(tmp_path: Path) -> None:
    p = tmp_path / "a.csv"
    p.write_text("1;'a;b'\n2;'it''s'\n", encoding="utf-8")
    options = CsvOptions(delimiter=";", quotechar="'", header=False, columns=["id", "text"])
    records, dead = _read_csv_file(p, options)
    assert dead == []
    assert records == [{"id": "1", "text": "a;b"}, {"id": "2", "text": "it's"}]


def test_csv_columns_rename_the_header_row(tmp_path: Path) -> None:
    p = tmp_path / "a.csv"
    p.write_text("x,y\n1,2\n", encoding="utf-8")
    records, _ = _read_csv_file(p, CsvOptions(columns=["a", "b"]))
    assert records == [{"a": "1", "b": "2"}]


def test_csv_malformed_rows_become_dead_letters_with_line_numbers(tmp_path: Path) -> None:
    p = tmp_path / "bad.csv"
    p.write_bytes(
        b"id,name,note\n"  # 1
        b'1,a,"two\nlines"\n'  # 2-3
        b"2,b,c,EXTRA\n"  # 4
        b"\n"  # 5 blank: skipped
        b'3,"multi\nline",x,y\n'  # 6-7: 4 fields, starts on line 6
        b"4,caf\xff,z\n"  # 8: not UTF-8
        b"5,e\n"  # 9: 2 fields
        b"6,f,g\n"  # 10
    )
    records, dead = _read_csv_file(p, batch=3)
    assert [r["id"] for r in records] == ["1", "6"]
    assert [(d.origin["line"], d.reason) for d in dead] == [
        (4, "CSV row has 4 fields, header has 3"),
        (6, "CSV row has 4 fields, header has 3"),
        (8, "invalid utf-8 text: invalid start byte at column 6"),
        (9, "CSV row has 2 fields, header has 3"),
    ]
    assert all(d.stage == "source" and d.origin["file"] == str(p) for d in dead)
    assert dead[0].record == "2,b,c,EXTRA"
    assert dead[1].record == '3,"multi\nline",x,y'
    assert dead[2].record == "4,caf\ufffd,z"


def test_csv_without_header_says_columns(tmp_path: Path) -> None:
    p = tmp_path / "a.csv"
    p.write_text("1,2\n1,2,3\n", encoding="utf-8")
    records, dead = _read_csv_file(p, CsvOptions(header=False, columns=["a", "b"]))
    assert records == [{"a": "1", "b": "2"}]
    assert [(d.origin["line"], d.reason) for d in dead] == [(2, "CSV row has 3 fields, columns has 2")]


def test_csv_latin1_encoding(tmp_path: Path) -> None:
    p = tmp_path / "a.csv"
    p.write_bytes("name\ncafé\n".encode("latin-1"))
    records, dead = _read_csv_file(p, CsvOptions(encoding="latin-1"))
    assert (records, dead) == ([{"name": "café"}], [])


def test_csv_position_resumes_exactly(tmp_path: Path) -> None:
    p = tmp_path / "a.csv"
    rows = [{"id": str(i), "txt": f"row {i}\nsecond line" if i % 3 == 0 else f"r{i}"} for i in range(50)]
    with p.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, ["id", "txt"])
        w.writeheader()
        w.writerows(rows)
    options = CsvOptions()
    names = ["id", "txt"]
    with _stream(p) as s:
        _, used = read_csv_header(s, options)
        first = read_csv(s, 7, path=str(p), line=1 + used, fieldnames=names, options=options)
    assert first.records == rows[:7]
    with _stream(p, first.offset) as s:
        got = []
        line = first.line
        while True:
            res = read_csv(s, 10, path=str(p), line=line, fieldnames=names, options=options)
            got += res.records
            line = res.line
            if res.eof:
                break
    assert got == rows[7:]
    assert line == p.read_bytes().count(b"\n") + 1


# --------------------------------------------------------------------------- JSON Lines


def test_jsonl_records_blank_lines_and_dead_letters(tmp_path: Path) -> None:
    p = tmp_path / "a.jsonl"
    p.write_bytes(
        b'\xef\xbb\xbf{"id": 1}\n'  # 1
        b"\n"  # 2
        b"   \r\n"  # 3
        b'{"id": 2, "x": 1 "y": 2}\n'  # 4
        b"[1, 2]\n"  # 5
        b'{"id": 3}\r\n'  # 6
        b"42\n"  # 7
        b'{"id": 4}'  # 8, no final newline
    )
    records, dead, line = _read_jsonl_file(p, batch=3)
    assert records == [{"id": 1}, {"id": 3}, {"id": 4}]
    assert [(d.origin, d.reason) for d in dead] == [
        ({"file": str(p), "line": 4}, "invalid JSON: Expecting ',' delimiter at column 18"),
        ({"file": str(p), "line": 5}, "JSON line is not an object (got array)"),
        ({"file": str(p), "line": 7}, "JSON line is not an object (got number)"),
    ]
    assert dead[0].record == '{"id": 2, "x": 1 "y": 2}'
    assert line == 9


def test_jsonl_byte_range_reads_only_its_range(tmp_path: Path) -> None:
    p = tmp_path / "a.jsonl"
    p.write_bytes(b"".join(json.dumps({"i": i}).encode() + b"\n" for i in range(100)))
    data = p.read_bytes()
    cut = data.index(b"\n", 500) + 1
    line2 = data[:cut].count(b"\n") + 1
    a, _, end_a = _read_jsonl_file(p, batch=7, end=cut)
    b, _, _ = _read_jsonl_file(p, batch=7, start=cut, line=line2)
    assert a + b == [{"i": i} for i in range(100)]
    assert end_a == line2


# --------------------------------------------------------------------------- JSON array


def test_json_array_elements_and_dead_letters() -> None:
    elements, dead = read_json_array(b'\xef\xbb\xbf[{"a": 1}, 2, {"b": "x"}, null]', path="f.json")
    assert dead == []
    records, bad = split_json_elements(elements, 0, 3, path="f.json")
    assert records == [{"a": 1}, {"b": "x"}]
    assert [(d.origin, d.reason, d.record) for d in bad] == [
        ({"file": "f.json", "index": 1}, "JSON array element 1 is not an object (got number)", 2)
    ]
    records, bad = split_json_elements(elements, 3, 10, path="f.json")
    assert records == [] and bad[0].reason == "JSON array element 3 is not an object (got null)"


def test_json_file_not_an_array_or_invalid() -> None:
    _, dead = read_json_array(b'{"a": 1}', path="f.json")
    assert [(d.reason, d.origin) for d in dead] == [("JSON file is not an array (got object)", {"file": "f.json", "line": 1})]
    _, dead = read_json_array(b'[\n{"a": 1},\n{"a" 2}\n]', path="f.json")
    assert [(d.reason, d.origin) for d in dead] == [
        ("invalid JSON: Expecting ':' delimiter at line 3 column 6", {"file": "f.json", "line": 3})
    ]
    assert dead[0].record == '[\n{"a": 1},\n{"a" 2}\n]'


# --------------------------------------------------------------------------- boundaries


def _check_boundaries(data: bytes, starts: list[tuple[int, int]], quote: bytes | None) -> None:
    assert starts[0] == (0, 1)
    offsets = [o for o, _ in starts]
    assert offsets == sorted(set(offsets))
    for offset, line in starts[1:]:
        assert data[offset - 1 : offset] == b"\n"
        assert data[:offset].count(b"\n") + 1 == line
        if quote:
            assert data[:offset].count(quote) % 2 == 0


def test_boundaries_never_inside_a_quoted_field(tmp_path: Path) -> None:
    # One record whose quoted field spans many lines right where the 100-byte target falls.
    data = b"id,txt\n1,short\n2,\"" + b"inside\n" * 40 + b'"\n3,after\n' + b"4,x\n" * 50
    starts = aligned_boundaries(io.BytesIO(data), len(data), 100, quotechar='"', chunk_size=64)
    _check_boundaries(data, starts, b'"')
    second = starts[1][0]
    assert second > data.index(b'"\n3,after') + 1  # not inside record 2
    # Without quote awareness the first line start after byte 100 would be inside the field.
    assert aligned_boundaries(io.BytesIO(data), len(data), 100)[1][0] < second


@pytest.mark.parametrize("chunk", [7, 64, 1 << 20])
def test_boundaries_line_numbers_and_parity_any_chunk_size(chunk: int) -> None:
    rows = []
    for i in range(300):
        if i % 7 == 0:
            rows.append(f'{i},"multi\nline ""quoted""\nfield",{i}\n')
        else:
            rows.append(f"{i},plain,{i}\n")
    data = ("a,b,c\n" + "".join(rows)).encode()
    starts = aligned_boundaries(io.BytesIO(data), len(data), 333, quotechar='"', chunk_size=chunk)
    assert len(starts) > 10
    _check_boundaries(data, starts, b'"')
    assert starts == aligned_boundaries(io.BytesIO(data), len(data), 333, quotechar='"')
    jl = aligned_boundaries(io.BytesIO(data), len(data), 333, chunk_size=chunk)
    _check_boundaries(data, jl, None)


def test_boundaries_small_file_is_one_split() -> None:
    assert aligned_boundaries(io.BytesIO(b"a\nb\n"), 4, 100) == [(0, 1)]
    assert aligned_boundaries(io.BytesIO(b"aaaa\n"), 5, 2) == [(0, 1)]


# --------------------------------------------------------------------------- writers and helpers


def test_encoders_round_trip() -> None:
    records = [{"id": 1, "name": "a, b", "ok": True, "tags": ["x"], "none": None}]
    assert [json.loads(line) for line in encode_jsonl(records).splitlines()] == records
    enc = CsvEncoder(["id", "name", "ok", "tags", "none"])
    text = enc.header() + enc.encode(records)
    assert list(csv.DictReader(io.StringIO(text))) == [
        {"id": "1", "name": "a, b", "ok": "true", "tags": '["x"]', "none": ""}
    ]
    with pytest.raises(ValueError, match="not CSV columns: extra"):
        enc.encode([{"id": 1, "extra": 2}])


def test_format_and_encoding_helpers() -> None:
    assert format_from_path("a/b.CSV") == "csv"
    assert format_from_path("x.tsv") == "csv"
    assert format_from_path("x.ndjson") == "jsonl"
    assert format_from_path("x.json") == "json"
    assert format_from_path("x.txt") is None
    assert format_from_path("dir.v2/file") is None
    assert normalize_encoding("UTF8") == "utf-8"
    assert normalize_encoding("utf-8-sig") == "utf-8"
    with pytest.raises(ValueError, match="not ASCII-compatible"):
        normalize_encoding("utf-16")
    with pytest.raises(ValueError, match="unknown encoding"):
        normalize_encoding("klingon")
