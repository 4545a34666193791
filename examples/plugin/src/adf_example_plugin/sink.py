"""``example_parts``: records as JSON Lines, one file per reader.

``{type: example_parts, directory: out/}`` writes ``out/part-0.jsonl`` with
``parallelism: 1``; with ``parallelism: 2`` the two reader processes write ``part-0.jsonl``
and ``part-1.jsonl``, each its own file, so no writer waits for another.

What the sink shows, piece by piece:

* **setup** (once per run, in the coordinator) creates the directory and removes the part
  files of an earlier run — unless ``run_context.resuming``: then what the interrupted attempt
  wrote stays, and the resumed run appends to it;
* **open** (in each reader) cuts off a torn last line, the half-written end of a batch whose
  process was killed while writing it. That batch was never checkpointed, so the resumed run
  writes it again;
* **write_batch** encodes the whole batch before writing any of it: a record that cannot be
  written as JSON raises :class:`~active_data_flow.errors.RecordValidationError` and nothing of the batch
  reaches the file; the engine then writes halves of the batch until that record is alone,
  and dead-letters only it;
* **flush** makes the batch durable before the engine checkpoints (the operating system has
  the bytes, so they survive this process being killed; ``fsync: true`` waits for the disk
  as well, to survive a power loss);
* **describe** names where the records went, for the run summary.

Delivery is at-least-once: a batch written but not yet checkpointed when a run stops is
written again when it resumes (at most one batch per reader).
"""

from __future__ import annotations

import datetime
import decimal
import glob
import json
import os
from collections.abc import Mapping, Sequence
from typing import IO, Any

from active_data_flow.attributes import Attribute
from active_data_flow.errors import RecordValidationError
from active_data_flow.record import Record
from active_data_flow.sink import Sink

__all__ = ["PartsSink"]

_PART = "part-{}.jsonl"
_TAIL_BLOCK = 64 * 1024


def _plain(value: Any) -> Any:
    """Values a schema may produce that JSON has no type for: decimals and dates as text."""
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _encode(record: Record) -> bytes:
    """One JSON line; :class:`RecordValidationError` naming the field when the record cannot be one."""
    try:
        return json.dumps(record, ensure_ascii=False, allow_nan=False, default=_plain).encode() + b"\n"
    except (TypeError, ValueError) as exc:
        for key, value in record.items():
            try:
                json.dumps(value, allow_nan=False, default=_plain)
            except (TypeError, ValueError):
                raise RecordValidationError(str(key), f"cannot be written as JSON: {exc}") from exc
        raise RecordValidationError("", f"cannot be written as JSON: {exc}") from exc


def _complete_length(path: str) -> int:
    """The length of ``path`` up to and including its last newline (0 when it has none)."""
    with open(path, "rb") as f:
        end = f.seek(0, os.SEEK_END)
        while end > 0:
            start = max(end - _TAIL_BLOCK, 0)
            f.seek(start)
            newline = f.read(end - start).rfind(b"\n")
            if newline >= 0:
                return start + newline + 1
            end = start
    return 0


class PartsSink(Sink):
    """Records as JSON Lines, one file per reader: ``<directory>/part-<reader>.jsonl``."""

    type_name = "example_parts"
    attributes = (
        Attribute("directory", str, required=True, help="where the part files go (created when missing)"),
        Attribute("fsync", bool, default=False,
                  help="fsync in flush(): survive a power loss, not only a crash of the process (slower)"),
    )

    def __init__(self, config: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        """Check the configuration (every problem at once); open nothing yet — the engine builds a
        sink in the coordinator too, to call setup() and describe()."""
        super().__init__(config, **kwargs)
        self.directory: str = self.config["directory"]
        self._file: IO[bytes] | None = None

    @property
    def path(self) -> str:
        """This reader's file: the run context says which reader this is."""
        return os.path.join(self.directory, _PART.format(self.run_context.reader_id))

    def setup(self) -> None:
        """Once per run, in the coordinator, before any reader opens the sink: create the directory
        and, for a new run, remove an earlier run's part files. Never when ``run_context.resuming``:
        the interrupted attempt's records stay and the resumed run appends to them."""
        os.makedirs(self.directory, exist_ok=True)
        if self.run_context.resuming:
            return
        for old in glob.glob(os.path.join(glob.escape(self.directory), _PART.format("*"))):
            os.remove(old)

    def open(self) -> None:
        """In each reader, before its first batch: open this reader's file for appending, after
        cutting off a torn last line left by a process killed while it wrote."""
        os.makedirs(self.directory, exist_ok=True)
        if os.path.exists(self.path):
            complete = _complete_length(self.path)
            if complete < os.path.getsize(self.path):
                os.truncate(self.path, complete)
        self._file = open(self.path, "ab")  # closed in close()

    def write_batch(self, records: Sequence[Record]) -> int:
        """Write a batch; return how many records were written (the engine checks the number).
        Raises :class:`RecordValidationError` before writing anything when a record cannot be
        encoded, so the engine can find it and dead-letter it alone."""
        if self._file is None:
            self.open()
        assert self._file is not None
        data = b"".join([_encode(record) for record in records])
        self._file.write(data)
        return len(records)

    def flush(self) -> None:
        """Make everything written so far durable: the engine checkpoints the batch right after
        this returns, and a checkpointed batch is never written again."""
        if self._file is not None:
            self._file.flush()
            if self.config["fsync"]:
                os.fsync(self._file.fileno())

    def close(self) -> None:
        """Close the file (flushed already after every batch). Not called when the process is killed."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def describe(self) -> str:
        """Where the records go, for the run summary and messages."""
        return f"example_parts {os.path.join(self.directory, _PART.format('*'))}"
