"""``example_lines``: a directory of text files, one record per line of ``key=value`` pairs.

A line such as::

    id=7 sensor="boiler room" celsius=71.5

becomes the record ``{"id": "7", "sensor": "boiler room", "celsius": "71.5"}`` (values are
text; a flow's ``schema`` gives them types). Values with spaces are quoted as in a shell.
Blank lines and lines starting with ``#`` are skipped; they are not records.

What the source shows, piece by piece:

* **splits** — :class:`LinesEnumerator` lists the files once (a :class:`LinesSplit` per file)
  and :class:`~active_data_flow.source.StaticSplitEnumerator` does the rest: handing splits to readers
  as they ask, taking back those of a reader that failed, snapshotting what is pending. With
  ``parallelism: 2`` two reader processes each ask for files until none are left;
* **positions** — a split's ``position`` is ``{"offset": bytes read, "line": lines read}``,
  updated after every batch; :class:`LinesReader` opens a split by seeking to that offset,
  so a resumed run continues at the line after the last one checkpointed, without reading
  the file from the start;
* **dead letters** — a line that does not parse (an unclosed quote, a word without ``=``, a
  key given twice, bytes that are not valid in ``encoding``) becomes a
  :class:`~active_data_flow.record.DeadLetter` with its file, line and offset; the lines after it are
  read as usual. Nothing is dropped without a trace;
* **origins** — every record's file and line go with the batch (:class:`~active_data_flow.source.Origins`),
  so a record a step or the sink rejects later is dead-lettered with where it came from.
"""

from __future__ import annotations

import codecs
import glob
import os
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any

from active_data_flow.attributes import Attribute
from active_data_flow.record import DeadLetter, Record
from active_data_flow.source import (
    Origins,
    ReaderBatch,
    ReaderStatus,
    Source,
    SourceReader,
    SourceReaderContext,
    Split,
    SplitEnumerator,
    SplitEnumeratorContext,
    SplitReader,
    StaticSplitEnumerator,
)

__all__ = ["LinesEnumerator", "LinesReader", "LinesSource", "LinesSplit", "parse_line"]


def parse_line(text: str) -> Record | None:
    """The record a line holds; None for a blank line or a comment.

    Raises ``ValueError`` saying what is wrong with a malformed line.
    """
    text = text.strip()
    if not text or text.startswith("#"):
        return None
    record: Record = {}
    try:
        tokens = shlex.split(text)
    except ValueError as exc:  # an unclosed quote, a backslash at the very end
        raise ValueError(str(exc).lower()) from None
    for token in tokens:
        key, sep, value = token.partition("=")
        if not sep or not key:
            raise ValueError(f"{token!r} is not key=value")
        if key in record:
            raise ValueError(f"key {key!r} is given twice")
        record[key] = value
    return record


def _known_encoding(value: Any) -> str | None:
    """An :class:`Attribute` check: None when fine, else what is wrong (reported with every other problem)."""
    try:
        codecs.lookup(value)
    except LookupError:
        return f"unknown encoding {value!r}"
    return None


@dataclass
class LinesSplit(Split):
    """One file. ``position`` is ``{"offset": …, "line": …}``: the bytes and lines already
    read (None: none). Every field is plain JSON, because splits travel between processes
    and into checkpoints as :meth:`~active_data_flow.source.Split.to_dict`."""

    path: str = ""

    @property
    def offset(self) -> int:
        """Bytes of the file already read: where reading resumes."""
        return int((self.position or {}).get("offset", 0))

    @property
    def line(self) -> int:
        """Lines of the file already read (the next line read is ``line + 1``)."""
        return int((self.position or {}).get("line", 0))


class LinesEnumerator(StaticSplitEnumerator):
    """A split per file of the directory, listed once when the run starts (a bounded source)."""

    def __init__(
        self, context: SplitEnumeratorContext, checkpoint: Mapping[str, Any] | None, directory: str, pattern: str
    ) -> None:
        """Keep what to list; ``checkpoint`` is this enumerator's ``snapshot_state()`` from an
        interrupted run (None for a new run), restored by ``start()``."""
        super().__init__(context, checkpoint)
        self.directory = directory
        self.pattern = pattern

    def discover_splits(self) -> list[Split]:
        """Every matching file, in name order. Called by ``start()`` in the coordinator when a run
        begins (a resumed run takes its splits from the checkpoint instead); raising here fails
        the run before anything is read."""
        if not os.path.isdir(self.directory):
            raise FileNotFoundError(f"source example_lines: directory {self.directory!r} does not exist")
        paths = sorted(glob.glob(os.path.join(glob.escape(self.directory), self.pattern)))
        return [LinesSplit(split_id=path, path=path) for path in paths if os.path.isfile(path)]

    #: pending splits are rebuilt from the enumerator's checkpoint with this class
    split_class = LinesSplit


class LinesReader(SplitReader):
    """Reads its files one at a time, a batch of lines per poll.

    :class:`~active_data_flow.source.SplitReader` does the bookkeeping the engine expects of a reader
    (asking for splits, continuing into the next split when one ends, reporting finished
    splits, snapshotting the unfinished ones); this class only opens, reads and closes a file.
    """

    def __init__(self, context: SourceReaderContext, encoding: str) -> None:
        """Nothing is opened here: the reader asks for splits in ``start()`` (SplitReader does)."""
        super().__init__(context)
        self.encoding = encoding
        self._file: IO[bytes] | None = None
        self._size = 0

    def open_split(self, split: Split) -> None:
        """Open the file at the split's position: a resumed split starts after its last line read."""
        assert isinstance(split, LinesSplit)
        self._file = open(split.path, "rb")  # closed in close_split
        self._size = os.fstat(self._file.fileno()).st_size
        self._file.seek(split.offset)

    def read_split(self, split: Split, max_records: int) -> tuple[ReaderBatch, bool]:
        """Up to ``max_records`` records and dead letters from the open file, and whether it is done.

        ``split.position`` is moved past the last line read, so that ``snapshot_state()``
        (called after the sink wrote the batch) checkpoints exactly what was delivered.
        """
        assert isinstance(split, LinesSplit) and self._file is not None
        start = offset = split.offset
        line = split.line
        records: list[Record] = []
        lines: list[int] = []
        dead: list[DeadLetter] = []
        at_end = False
        while len(records) + len(dead) < max_records:
            raw = self._file.readline()
            if not raw:
                at_end = True
                break
            line_offset, offset, line = offset, offset + len(raw), line + 1
            try:
                record = parse_line(raw.decode(self.encoding))  # UnicodeDecodeError is a ValueError
            except ValueError as exc:
                dead.append(DeadLetter(
                    raw.decode(self.encoding, "replace").rstrip("\r\n"),
                    str(exc),  # the reason only: the run summary counts dead letters by reason
                    "source",
                    type(exc).__name__,
                    origin={"file": split.path, "line": line, "offset": line_offset},
                ))
                continue
            if record is not None:
                records.append(record)
                lines.append(line)
        split.position = {"offset": offset, "line": line}
        origins = Origins()
        origins.add(len(records), {"file": split.path}, "line", lines)
        batch = ReaderBatch(records, ReaderStatus.MORE_AVAILABLE, dead_letters=dead,
                            input_bytes=offset - start, origins=origins)
        return batch, at_end or offset >= self._size

    def close_split(self, split: Split) -> None:
        """The split is done, or the reader closes while holding it."""
        if self._file is not None:
            self._file.close()
            self._file = None


class LinesSource(Source):
    """Key=value lines from a directory of text files: a record per line, a split per file."""

    type_name = "example_lines"
    attributes = (
        Attribute("path", str, required=True, help="the directory that holds the text files"),
        Attribute("pattern", str, default="*.txt", help="which files of the directory to read (a glob)"),
        Attribute("encoding", str, default="utf-8", check=_known_encoding,
                  help="the files' text encoding (ASCII-compatible); a line not valid in it is dead-lettered"),
    )

    def create_enumerator(
        self, context: SplitEnumeratorContext, checkpoint: Mapping[str, Any] | None = None
    ) -> SplitEnumerator:
        """The enumerator, new or restored from its checkpoint (once per run, in the coordinator).
        It lists nothing yet: the engine calls its ``start()``."""
        return LinesEnumerator(context, checkpoint, self.option("path"), self.option("pattern"))

    def create_reader(self, context: SourceReaderContext) -> SourceReader:
        """A reader, in the process that reads (once per reader). It opens nothing yet: files are
        opened when a split is read."""
        return LinesReader(context, self.option("encoding"))

    #: a split (with its position) is rebuilt with this class from the plain data it travelled
    #: or was checkpointed as (``split_from_dict``)
    split_class = LinesSplit

    def total_work(self, splits: Sequence[Split]) -> int | None:
        """The bytes left to read in ``splits``: the engine's progress bar counts ``input_bytes`` against it."""
        total = 0
        for split in splits:
            assert isinstance(split, LinesSplit)
            try:
                total += max(os.path.getsize(split.path) - split.offset, 0)
            except OSError:
                return None
        return total
