"""The source on its own: splits, positions, dead letters (no engine; fake contexts)."""

from __future__ import annotations

from pathlib import Path

import pytest
from adf_example_plugin import LinesSource, LinesSplit, parse_line

from active_data_flow.errors import ConfigError
from active_data_flow.source import CollectingEnumeratorContext, DetachedReaderContext, ReaderStatus


def test_parse_line() -> None:
    assert parse_line('id=7 sensor="boiler room" celsius=71.5') == {"id": "7", "sensor": "boiler room", "celsius": "71.5"}
    assert parse_line("   ") is None
    assert parse_line("# a comment") is None
    for bad, reason in [
        ('id=7 sensor="boiler', "no closing quotation"),
        ("id=7 boiler", "'boiler' is not key=value"),
        ("=7", "'=7' is not key=value"),
        ("id=7 id=8", "key 'id' is given twice"),
    ]:
        with pytest.raises(ValueError, match=reason):
            parse_line(bad)


def test_every_problem_of_a_configuration_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as err:
        LinesSource(encoding="no-such-codec", colour="blue")
    message = str(err.value)
    assert "'path' is required" in message
    assert "unknown encoding 'no-such-codec'" in message
    assert "unknown key 'colour'" in message


def test_a_split_per_file_handed_to_whichever_reader_asks(tmp_path: Path, write_readings) -> None:
    write_readings(tmp_path, 3, 2)
    (tmp_path / "notes.md").write_text("not a reading\n")
    ctx = CollectingEnumeratorContext(parallelism=2)
    enumerator = LinesSource(path=str(tmp_path)).create_enumerator(ctx)
    enumerator.start()
    for reader_id in (0, 1, 0, 1):
        enumerator.handle_split_request(reader_id)
    assert [Path(s.split_id).name for s in ctx.assigned] == ["readings-00.txt", "readings-01.txt", "readings-02.txt"]
    assert ctx.done == {1}  # the fourth request: nothing left for reader 1

    # the enumerator's checkpoint keeps what was not handed out yet
    ctx = CollectingEnumeratorContext()
    source = LinesSource(path=str(tmp_path))
    enumerator = source.create_enumerator(ctx)
    enumerator.start()
    enumerator.handle_split_request(0)
    restored = source.create_enumerator(ctx, enumerator.snapshot_state())
    restored.start()
    restored.handle_split_request(0)
    restored.handle_split_request(0)
    assert [Path(s.split_id).name for s in ctx.assigned] == ["readings-00.txt", "readings-01.txt", "readings-02.txt"]


def test_a_missing_directory_fails_before_anything_is_read(tmp_path: Path) -> None:
    enumerator = LinesSource(path=str(tmp_path / "nowhere")).create_enumerator(CollectingEnumeratorContext())
    with pytest.raises(FileNotFoundError, match="does not exist"):
        enumerator.start()


def _reader(source: LinesSource, splits: list[LinesSplit]):
    reader = source.create_reader(DetachedReaderContext())
    reader.add_splits(splits)
    reader.notify_no_more_splits()
    reader.start()
    return reader


def test_a_reader_resumes_after_the_last_line_it_returned(tmp_path: Path, write_readings) -> None:
    ids = write_readings(tmp_path, 1, 10)
    path = str(tmp_path / "readings-00.txt")
    source = LinesSource(path=str(tmp_path))

    first = _reader(source, [LinesSplit(path, path=path)])
    batch = first.poll_batch(4)
    assert [r["id"] for r in batch.records] == ["1", "2", "3", "4"]
    assert batch.status is ReaderStatus.MORE_AVAILABLE and batch.finished_splits == []
    # what the engine checkpoints after the sink wrote the batch: the split with its position,
    # as plain data (it goes through JSON into the reader's checkpoint log)
    (snapshot,) = [s.to_dict() for s in first.snapshot_state()]
    assert snapshot["position"] == {"offset": len(b"# file 0\n") + sum(
        len(f'id={i} sensor="sensor 0" celsius={i % 40}.5\n') for i in ids[:4]), "line": 5}
    first.close()

    # a new reader (a resumed run, another process) continues from there
    second = _reader(source, [source.split_from_dict(snapshot)])
    rest = []
    while True:
        batch = second.poll_batch(4)
        rest += [int(r["id"]) for r in batch.records]
        if batch.status is ReaderStatus.END_OF_INPUT:
            break
    assert rest == ids[4:]
    assert second.snapshot_state() == []  # finished: nothing left to checkpoint


def test_malformed_lines_become_dead_letters_with_their_position(tmp_path: Path) -> None:
    lines = [
        b"id=1 celsius=20.5",
        b"",
        b'id=2 sensor="open',         # line 3: unclosed quote
        b"id=3 celsius=21.0",
        b"id=4 celsius 21.5",         # line 5: a word without '='
        b"id=5 sensor=caf\xe9",       # line 6: not UTF-8
        b"id=6 celsius=22.0\r",       # CRLF line ends are fine
        b"id=7 celsius=22.5",         # no newline at the end of the file
    ]
    path = tmp_path / "mixed.txt"
    path.write_bytes(b"\n".join(lines))
    reader = _reader(LinesSource(path=str(tmp_path)), [LinesSplit(str(path), path=str(path))])
    batch = reader.poll_batch(100)

    assert [r["id"] for r in batch.records] == ["1", "3", "6", "7"]
    assert batch.status is ReaderStatus.END_OF_INPUT and batch.finished_splits == [str(path)]
    offsets = [sum(len(line) + 1 for line in lines[:n]) for n in range(len(lines))]
    dead = batch.dead_letters
    assert [(d.stage, d.origin) for d in dead] == [
        ("source", {"file": str(path), "line": 3, "offset": offsets[2]}),
        ("source", {"file": str(path), "line": 5, "offset": offsets[4]}),
        ("source", {"file": str(path), "line": 6, "offset": offsets[5]}),
    ]
    assert [d.reason for d in dead[:2]] == ["no closing quotation", "'celsius' is not key=value"]
    assert dead[2].reason.startswith("'utf-8' codec can't decode byte 0xe9")
    assert batch.dead_letters[0].record == 'id=2 sensor="open'
    assert batch.dead_letters[2].error_type == "UnicodeDecodeError"
    # each record's file and line go with the batch, for a dead letter a step or the sink makes later
    assert batch.origins is not None and batch.origins.of(2) == {"file": str(path), "line": 7}
    assert batch.input_bytes == path.stat().st_size


def test_total_work_is_the_bytes_left(tmp_path: Path, write_readings) -> None:
    write_readings(tmp_path, 2, 3)
    a, b = sorted(str(p) for p in tmp_path.glob("*.txt"))
    source = LinesSource(path=str(tmp_path))
    size_a, size_b = Path(a).stat().st_size, Path(b).stat().st_size
    assert source.total_work([LinesSplit(a, path=a), LinesSplit(b, path=b, position={"offset": 10, "line": 1})]) \
        == size_a + size_b - 10
