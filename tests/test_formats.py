"""active_data_flow.formats: CSV / JSON array / JSON Lines parsing on real files, dead letters, split boundaries."""

from __future__ import annotations

import codecs
import contextlib
import csv
import io
import json
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from active_data_flow.errors import SourceDataError
from active_data_flow.formats import (
    DEFAULT_MAX_FIELD_BYTES,
    CsvEncoder,
    CsvOptions,
    TextLines,
    aligned_boundaries,
    count_lines,
    detect_bom,
    duplicate_names,
    encode_jsonl,
    format_from_path,
    normalize_encoding,
    open_range,
    read_csv,
    read_csv_header,
    read_json_array,
    read_jsonl,
    split_json_elements,
)
from active_data_flow.record import DeadLetter


@contextlib.contextmanager
def _text_lines(
    path: Path, start: int = 0, end: int | None = None, line: int = 1, limit: int = DEFAULT_MAX_FIELD_BYTES,
    chunk: int = 1 << 16, encoding: str = "utf-8",
) -> Iterator[TextLines]:
    """The lines of ``path`` from ``start`` to ``end`` as the file source reads them (a byte-order mark at 0 decides the encoding)."""
    stream = open_range(open(path, "rb", buffering=0), start, end)

    def beyond(n: int) -> bytes:  # the file after the range, as the file source gives it
        with path.open("rb") as f:
            f.seek(end or 0)
            return f.read(n)

    with stream:
        if start == 0:
            bom, skip = detect_bom(stream.peek(4)[:4])
            encoding = bom or encoding
            stream.read(skip)
            start = skip
        yield TextLines(
            stream, offset=start, line=line, encoding=encoding, limit=limit, chunk_size=chunk,
            beyond=beyond if end is not None else None,
        )


def _read_csv_file(
    path: Path, options: CsvOptions | None = None, batch: int = 1000, start: int = 0, end: int | None = None,
    line: int = 1, limit: int = DEFAULT_MAX_FIELD_BYTES, chunk: int = 1 << 16,
) -> tuple[list[dict[str, Any]], list[DeadLetter]]:
    options = options or CsvOptions()
    with _text_lines(path, limit=limit, encoding=options.encoding) as head:
        names = read_csv_header(head, options, path=str(path), limit=limit)[0]
    records: list[dict[str, Any]] = []
    dead: list[DeadLetter] = []
    with _text_lines(path, start, end, line, limit, chunk, options.encoding) as src:
        if start == 0:
            read_csv_header(src, options, path=str(path))
        while True:
            res = read_csv(src, batch, path=str(path), fieldnames=names, options=options)
            records += res.records
            dead += res.dead_letters
            if res.eof:
                return records, dead


def _read_jsonl_file(
    path: Path, batch: int = 1000, start: int = 0, end: int | None = None, line: int = 1,
    limit: int = DEFAULT_MAX_FIELD_BYTES, chunk: int = 1 << 16,
) -> tuple[list[dict[str, Any]], list[DeadLetter], int]:
    records: list[dict[str, Any]] = []
    dead: list[DeadLetter] = []
    with _text_lines(path, start, end, line, limit, chunk) as src:
        while True:
            res = read_jsonl(src, batch, path=str(path))
            records += res.records
            dead += res.dead_letters
            if res.eof:
                return records, dead, res.line


def _where(dead: list[DeadLetter]) -> list[tuple[int, str]]:
    return [(d.origin["line"], d.reason) for d in dead]


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


def test_csv_malformed_rows_become_dead_letters_with_line_numbers_and_offsets(tmp_path: Path) -> None:
    p = tmp_path / "bad.csv"
    data = (
        b"id,name,note\n"  # 1
        b'1,a,"two\nlines"\n'  # 2-3
        b"2,b,c,EXTRA\n"  # 4
        b"\n"  # 5 blank: skipped
        b'3,"multi\nline",x,y\n'  # 6-7: 4 fields, starts on line 6
        b"4,caf\xff,z\n"  # 8: not UTF-8
        b"5,e\n"  # 9: 2 fields
        b"6,f,g\n"  # 10
    )
    p.write_bytes(data)
    records, dead = _read_csv_file(p, batch=3)
    assert [r["id"] for r in records] == ["1", "6"]
    assert _where(dead) == [
        (4, "CSV row has 4 fields, header has 3"),
        (6, "CSV row has 4 fields, header has 3"),
        (8, "invalid utf-8 text: invalid start byte at column 6"),
        (9, "CSV row has 2 fields, header has 3"),
    ]
    assert all(d.stage == "source" and d.origin["file"] == str(p) for d in dead)
    assert [d.origin["offset"] for d in dead] == [data.index(s) for s in (b"2,b", b'3,"', b"4,caf", b"5,e")]
    assert dead[0].record == "2,b,c,EXTRA"
    assert dead[1].record == '3,"multi\nline",x,y'
    assert dead[2].record == "4,caf\ufffd,z"


def test_csv_text_that_does_not_decode_dead_letters_its_whole_multiline_record(tmp_path: Path) -> None:
    p = tmp_path / "bad.csv"
    p.write_bytes(b'id,note\n1,"first\nsec\xffond\nthird"\n2,after\n')
    records, dead = _read_csv_file(p)
    assert records == [{"id": "2", "note": "after"}]
    assert _where(dead) == [(2, "invalid utf-8 text: invalid start byte at column 4 on line 3")]
    assert dead[0].record == '1,"first\nsec\ufffdond\nthird"'


def test_csv_without_header_says_columns(tmp_path: Path) -> None:
    p = tmp_path / "a.csv"
    p.write_text("1,2\n1,2,3\n", encoding="utf-8")
    records, dead = _read_csv_file(p, CsvOptions(header=False, columns=["a", "b"]))
    assert records == [{"a": "1", "b": "2"}]
    assert _where(dead) == [(2, "CSV row has 3 fields, columns has 2")]


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
    with _text_lines(p) as src:
        read_csv_header(src, options)
        first = read_csv(src, 7, path=str(p), fieldnames=names, options=options)
    assert first.records == rows[:7]
    assert list(first.lines) == [2, 4, 5, 6, 8, 9, 10]  # each record's first line (rows 0, 3, 6 take two)
    got = []
    with _text_lines(p, first.offset, line=first.line) as src:
        while True:
            res = read_csv(src, 10, path=str(p), fieldnames=names, options=options)
            got += res.records
            if res.eof:
                break
    assert got == rows[7:]
    assert res.line == p.read_bytes().count(b"\n") + 1


def test_csv_field_longer_than_the_csv_modules_default_limit_is_read_intact(tmp_path: Path) -> None:
    # the csv module stops at 131072 characters per field unless told otherwise
    blob = json.dumps({"values": list(range(40_000)), "text": "é" * 1000})
    assert len(blob) > 131_072
    p = tmp_path / "blob.csv"
    with p.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerows([["id", "blob"], [1, blob], [2, "small"]])
    records, dead = _read_csv_file(p)
    assert dead == []
    assert records == [{"id": "1", "blob": blob}, {"id": "2", "blob": "small"}]


def test_csv_field_size_limit_is_raised_for_max_field_bytes_and_never_lowered(tmp_path: Path) -> None:
    p = tmp_path / "a.csv"
    p.write_text("a\n1\n")
    before = csv.field_size_limit()
    try:
        csv.field_size_limit(1 << 30)
        _read_csv_file(p, limit=1 << 20)
        assert csv.field_size_limit() == 1 << 30  # a larger limit set elsewhere stays
        csv.field_size_limit(1000)
        _read_csv_file(p, limit=1 << 20)
        assert csv.field_size_limit() == 1 << 20
    finally:
        csv.field_size_limit(before)


def test_csv_unterminated_quote_dead_letters_its_line_and_reading_resumes_on_the_next(tmp_path: Path) -> None:
    p = tmp_path / "a.csv"
    data = b'id,v\n1,a\n2,"never closed\n3,b\n4,c'
    p.write_bytes(data)
    records, dead = _read_csv_file(p)
    assert records == [{"id": "1", "v": "a"}, {"id": "3", "v": "b"}, {"id": "4", "v": "c"}]
    assert _where(dead) == [(3, "unterminated quoted field opened on line 3")]
    assert dead[0].record == '2,"never closed'
    assert dead[0].origin == {"file": str(p), "line": 3, "offset": data.index(b"2,")}


def test_csv_record_with_a_closed_field_then_an_unterminated_one_resumes_after_the_opening_line(tmp_path: Path) -> None:
    p = tmp_path / "a.csv"
    p.write_bytes(b'id,v,w\n1,"two\nlines","open\n2,b,c\n3,d,e\n')
    records, dead = _read_csv_file(p)
    assert _where(dead) == [(2, "unterminated quoted field opened on line 3")]
    assert dead[0].record == '1,"two\nlines","open'
    assert records == [{"id": "2", "v": "b", "w": "c"}, {"id": "3", "v": "d", "w": "e"}]


def test_csv_quoted_field_longer_than_max_field_bytes_is_a_dead_letter_and_the_next_line_is_read(tmp_path: Path) -> None:
    p = tmp_path / "a.csv"
    long_closed = '1,"' + "x" * 300 + '"\n'
    never_closed = '2,"' + "y" * 50 + "\n" + "".join(f"{i},plain{i}\n" for i in range(10, 40))
    p.write_text("id,v\n" + long_closed + never_closed + '50,"quoted, fine"\n')
    records, dead = _read_csv_file(p, limit=100, chunk=64)
    assert _where(dead) == [
        (2, "quoted field opened on line 2 is longer than max_field_bytes (100 bytes)"),
        (3, "quoted field opened on line 3 is longer than max_field_bytes (100 bytes)"),
    ]
    assert [r["id"] for r in records] == [str(i) for i in range(10, 40)] + ["50"]
    assert records[-1]["v"] == "quoted, fine"
    assert dead[1].record == '2,"' + "y" * 50


def test_csv_unquoted_field_longer_than_max_field_bytes_is_a_dead_letter(tmp_path: Path) -> None:
    p = tmp_path / "a.csv"
    p.write_text("id,v\n1," + "z" * 500 + "\n2,ok\n")
    records, dead = _read_csv_file(p, limit=100, chunk=32)
    assert records == [{"id": "2", "v": "ok"}]
    assert _where(dead) == [(2, "field on line 2 is longer than max_field_bytes (100 bytes)")]
    assert dead[0].record.endswith("…") and len(dead[0].record) < 600


def test_csv_fields_up_to_max_field_bytes_quotes_included_are_read(tmp_path: Path) -> None:
    p = tmp_path / "a.csv"
    p.write_text('id,v\n1,"' + "a" * 98 + '"\n2,"' + "b" * 99 + '"\n3,' + "c" * 100 + "\n4," + "d" * 101 + "\n")
    records, dead = _read_csv_file(p, limit=100, chunk=16)
    assert [r["id"] for r in records] == ["1", "3"]
    assert [line for line, _ in _where(dead)] == [3, 5]


def test_csv_memory_stays_bounded_by_max_field_bytes_for_input_without_line_ends(tmp_path: Path) -> None:
    p = tmp_path / "a.csv"
    with p.open("wb") as f:
        f.write(b'id,v\n1,"')
        for _ in range(64):
            f.write(b"q" * (1 << 17))  # 8 MiB in a quoted field that never closes, no line end
    tracemalloc.start()
    try:
        records, dead = _read_csv_file(p, limit=256 << 10)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert records == []
    assert _where(dead) == [(2, "quoted field opened on line 2 is longer than max_field_bytes (262144 bytes)")]
    assert peak < 3 << 20, peak


@pytest.mark.parametrize("ends", ["\n", "\r\n", "\r", "mixed"])
def test_csv_line_ends_lf_crlf_cr_and_mixed_give_records_and_line_numbers(tmp_path: Path, ends: str) -> None:
    cycle = ["\n", "\r\n", "\r"] if ends == "mixed" else [ends]
    lines = ["id,v", '1,"in\r\nside"', "2,x,EXTRA", '3,"a\rb"', '4,"c\nd"', "5,y"]
    text = "".join(line + cycle[i % len(cycle)] for i, line in enumerate(lines))
    p = tmp_path / "a.csv"
    p.write_bytes(text.encode())
    records, dead = _read_csv_file(p, chunk=16)
    assert records == [{"id": "1", "v": "in\r\nside"}, {"id": "3", "v": "a\rb"}, {"id": "4", "v": "c\nd"}, {"id": "5", "v": "y"}]
    assert _where(dead) == [(4, "CSV row has 3 fields, header has 2")]


def test_csv_reads_the_same_whatever_the_chunk_size(tmp_path: Path) -> None:
    p = tmp_path / "a.csv"
    rows = [[i, f'q"uo\r\nte{i}' if i % 3 else f"p{i}", "x" * (i % 40)] for i in range(300)]
    with p.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\r\n" if len(rows) % 2 else "\n")
        w.writerow(["a", "b", "c"])
        w.writerows(rows)
    expected, _ = _read_csv_file(p)
    assert [r["b"] for r in expected][:3] == ["p0", 'q"uo\r\nte1', 'q"uo\r\nte2']
    for chunk in (16, 17, 31, 4096):
        assert _read_csv_file(p, chunk=chunk, batch=7) == (expected, [])


def test_csv_header_with_an_unterminated_quote_raises_naming_the_file(tmp_path: Path) -> None:
    p = tmp_path / "head.csv"
    p.write_text('id,"name\n1,a\n')
    with pytest.raises(SourceDataError, match=r"head\.csv: the header row on line 1 cannot be read: unterminated"):
        _read_csv_file(p)


# --------------------------------------------------------------------------- encodings


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be", "utf-8"])
def test_byte_order_mark_decides_the_encoding_and_positions_stay_file_offsets(tmp_path: Path, encoding: str) -> None:
    bom = {"utf-16-le": codecs.BOM_UTF16_LE, "utf-16-be": codecs.BOM_UTF16_BE, "utf-32-le": codecs.BOM_UTF32_LE,
           "utf-32-be": codecs.BOM_UTF32_BE, "utf-8": codecs.BOM_UTF8}[encoding]
    text = 'id,name\r\n1,"é\r\nx"\n2,😀\r3,plain\r\n'
    p = tmp_path / "a.csv"
    p.write_bytes(bom + text.encode(encoding))
    assert detect_bom(p.read_bytes()[:4]) == (encoding, len(bom))
    expected = [{"id": "1", "name": "é\r\nx"}, {"id": "2", "name": "😀"}, {"id": "3", "name": "plain"}]
    assert _read_csv_file(p, chunk=16) == (expected, [])
    options = CsvOptions()
    with _text_lines(p, chunk=16) as src:
        names, _ = read_csv_header(src, options)
        first = read_csv(src, 1, path=str(p), fieldnames=names, options=options)
    assert first.records == expected[:1]
    assert first.offset == len(bom) + len('id,name\r\n1,"é\r\nx"\n'.encode(encoding))
    with _text_lines(p, first.offset, line=first.line, encoding=encoding) as src:
        rest = read_csv(src, 10, path=str(p), fieldnames=names, options=options)
    assert rest.records == expected[1:] and list(rest.lines) == [4, 5] and rest.eof


def test_utf16_text_that_does_not_decode_is_a_dead_letter(tmp_path: Path) -> None:
    p = tmp_path / "a.jsonl"
    good = '{"a": 1}\n'.encode("utf-16-le")
    p.write_bytes(codecs.BOM_UTF16_LE + good + b'{\x00"\x00\x00\xd8"\x00}\x00\n\x00' + good + b"x")  # lone surrogate; odd last byte
    records, dead, _ = _read_jsonl_file(p)
    assert records == [{"a": 1}, {"a": 1}]
    assert [(d.origin["line"], d.reason.split(":")[0]) for d in dead] == [
        (2, "invalid utf-16-le text"),
        (4, "invalid utf-16-le text"),
    ]


def test_json_array_with_a_utf16_byte_order_mark() -> None:
    data = codecs.BOM_UTF16_BE + '[{"a": "é"}]'.encode("utf-16-be")
    assert read_json_array(data, path="f.json") == ([{"a": "é"}], [])


# --------------------------------------------------------------------------- JSON Lines


def test_jsonl_records_blank_lines_and_dead_letters(tmp_path: Path) -> None:
    p = tmp_path / "a.jsonl"
    data = (
        b'\xef\xbb\xbf{"id": 1}\n'  # 1
        b"\n"  # 2
        b"   \r\n"  # 3
        b'{"id": 2, "x": 1 "y": 2}\n'  # 4
        b"[1, 2]\n"  # 5
        b'{"id": 3}\r\n'  # 6
        b"42\n"  # 7
        b'{"id": 4}'  # 8, no final newline
    )
    p.write_bytes(data)
    records, dead, line = _read_jsonl_file(p, batch=3)
    assert records == [{"id": 1}, {"id": 3}, {"id": 4}]
    assert [(d.origin, d.reason) for d in dead] == [
        ({"file": str(p), "line": 4, "offset": data.index(b'{"id": 2')}, "invalid JSON: Expecting ',' delimiter at column 18"),
        ({"file": str(p), "line": 5, "offset": data.index(b"[1")}, "JSON line is not an object (got array)"),
        ({"file": str(p), "line": 7, "offset": data.index(b"42")}, "JSON line is not an object (got number)"),
    ]
    assert dead[0].record == '{"id": 2, "x": 1 "y": 2}'
    assert line == 9


def test_jsonl_result_says_each_records_line_and_offset(tmp_path: Path) -> None:
    p = tmp_path / "a.jsonl"
    p.write_bytes(b'{"a": 1}\n{"a": 2}\n\n{"a": 3}\n')
    with _text_lines(p) as src:
        plain = read_jsonl(src, 2, path=str(p), offsets=True)
        gaps = read_jsonl(src, 5, path=str(p), offsets=True)
    assert (plain.lines, list(plain.offsets or [])) == (1, [0, 9])  # consecutive lines: the first one's number
    assert (gaps.records, gaps.lines, gaps.offsets) == ([{"a": 3}], [4], [19])


def test_jsonl_truncated_last_line_is_a_dead_letter_with_its_line(tmp_path: Path) -> None:
    p = tmp_path / "a.jsonl"
    p.write_bytes(b'{"a": 1}\r\n{"a": 2}\n{"a": [1, 2')
    records, dead, _ = _read_jsonl_file(p)
    assert records == [{"a": 1}, {"a": 2}]
    assert _where(dead) == [(3, "invalid JSON: Expecting ',' delimiter at column 12")]
    assert dead[0].record == '{"a": [1, 2'


def test_jsonl_nul_bytes_and_invalid_utf8_are_dead_letters_not_crashes(tmp_path: Path) -> None:
    p = tmp_path / "a.jsonl"
    p.write_bytes(b'{"a": "x\x00y"}\n\x00\x00\n{"a": "caf\xe9"}\n{"a": 4}\n')
    records, dead, _ = _read_jsonl_file(p)
    assert records == [{"a": 4}]
    assert _where(dead) == [
        (1, "invalid JSON: Invalid control character at column 9"),
        (2, "invalid JSON: Expecting value at column 1"),
        (3, "invalid utf-8 text: invalid continuation byte at column 11"),
    ]


@pytest.mark.parametrize("ends", ["\n", "\r\n", "\r", "mixed"])
def test_jsonl_line_ends_lf_crlf_cr_and_mixed_give_line_numbers(tmp_path: Path, ends: str) -> None:
    cycle = ["\n", "\r\n", "\r"] if ends == "mixed" else [ends]
    lines = ['{"n": 1}', "", "oops", '{"n": 2}', '{"n": 3}']
    p = tmp_path / "a.jsonl"
    p.write_bytes("".join(line + cycle[i % len(cycle)] for i, line in enumerate(lines)).encode())
    for chunk in (16, 1 << 16):
        records, dead, last = _read_jsonl_file(p, chunk=chunk, batch=2)
        assert records == [{"n": 1}, {"n": 2}, {"n": 3}]
        assert [line for line, _ in _where(dead)] == [3]
        assert last == 6


def test_jsonl_a_50_mb_line_parses(tmp_path: Path) -> None:
    p = tmp_path / "big.jsonl"
    big = {"id": 1, "blob": "x" * (50 << 20)}
    with p.open("wb") as f:
        f.write(b'{"id": 0}\n')
        f.write(json.dumps(big).encode())
        f.write(b'\n{"id": 2}\n')
    records, dead, _ = _read_jsonl_file(p, batch=10)
    assert dead == [] and [r["id"] for r in records] == [0, 1, 2]
    assert len(records[1]["blob"]) == 50 << 20


def test_jsonl_line_longer_than_max_field_bytes_is_a_dead_letter_without_being_held(tmp_path: Path) -> None:
    p = tmp_path / "a.jsonl"
    with p.open("wb") as f:
        f.write(b'{"id": 0}\n{"id": 1, "blob": "')
        for _ in range(64):
            f.write(b"z" * (1 << 17))
        f.write(b'"}\r\n{"id": 2}\n')
    tracemalloc.start()
    try:
        records, dead, _ = _read_jsonl_file(p, limit=256 << 10)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert records == [{"id": 0}, {"id": 2}]
    assert _where(dead) == [(2, "JSON line longer than max_field_bytes (262144 bytes)")]
    assert dead[0].record.startswith('{"id": 1, "blob": "zzz') and dead[0].record.endswith("…")
    assert peak < 3 << 20, peak


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


def test_truncated_json_array_file_is_one_dead_letter_naming_the_file() -> None:
    elements, dead = read_json_array(b'[{"a": 1},\n {"a": 2},\n {"a"', path="t.json")
    assert elements == []
    assert [(d.origin, d.reason) for d in dead] == [
        ({"file": "t.json", "line": 3}, "invalid JSON: Expecting ':' delimiter at line 3 column 6")
    ]


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


def test_boundaries_are_the_csv_modules_row_starts_with_stray_quotes_and_cr_line_ends() -> None:
    text = 'a,b\r1,O"Brien\r\n2,"x\ry"\n3,12" pipe,"q"\r4,"""a"""\n5,z\n'
    data = text.encode()
    starts = aligned_boundaries(io.BytesIO(data), len(data), 1, quotechar='"', chunk_size=5)
    reader = csv.reader(io.StringIO(text, newline=""))
    expected = [(0, 1)]
    for _ in reader:
        offset = len("".join(text.splitlines(True)[: reader.line_num]).encode())
        if offset < len(data):
            expected.append((offset, reader.line_num + 1))
    assert starts == expected


@pytest.mark.parametrize("split_bytes", [20, 33, 64])
def test_boundaries_apply_the_readers_recovery_from_an_unterminated_quote(tmp_path: Path, split_bytes: int) -> None:
    # parity would put every later boundary inside "a quoted field": the scan recovers like the reader
    lines = ["id,v"] + [f"{i},v{i}" for i in range(40)]
    lines[10] = '9,"never closed'
    lines[25] = '24,"quoted, but fine"'
    p = tmp_path / "a.csv"
    p.write_text("\n".join(lines) + "\n")
    data = p.read_bytes()
    whole = _read_csv_file(p, limit=64)
    assert _where(whole[1]) == [(11, "quoted field opened on line 11 is longer than max_field_bytes (64 bytes)")]
    assert len(whole[0]) == 39
    starts = aligned_boundaries(io.BytesIO(data), len(data), split_bytes, quotechar='"', max_field_bytes=64, chunk_size=16)
    assert len(starts) > 3
    assert all(data[o - 1 : o] == b"\n" and data[:o].count(b"\n") + 1 == n for o, n in starts[1:])
    records: list[dict[str, Any]] = []
    dead: list[DeadLetter] = []
    for i, (start, line) in enumerate(starts):
        end = starts[i + 1][0] if i + 1 < len(starts) else None
        part = _read_csv_file(p, start=start, end=end, line=line, limit=64)
        records += part[0]
        dead += part[1]
    assert records == whole[0]
    assert _where(dead) == _where(whole[1])


def test_line_helpers() -> None:
    assert count_lines(b"a\nb\r\nc\rd") == 3
    assert count_lines(b"a\rb\r\n", 0, 3) == 1
    assert duplicate_names(["id", "x", "id", "", "x", ""]) == ["id", "x", ""]
    assert detect_bom(b"\xff\xfe\x00\x00") == ("utf-32-le", 4)
    assert detect_bom(b"\xff\xfeA\x00") == ("utf-16-le", 2)
    assert detect_bom(b"id,x") == (None, 0)


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
    with pytest.raises(ValueError, match=r"not ASCII-compatible.*byte-order mark"):
        normalize_encoding("utf-16")
    with pytest.raises(ValueError, match="unknown encoding"):
        normalize_encoding("klingon")
