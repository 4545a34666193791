"""A bounded Flink job's file output, committed split by split (exactly once across restarts)."""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Mapping
from typing import Any

from active_data_flow.context import RunContext
from active_data_flow.errors import AdfError
from active_data_flow.registry import registry

__all__ = ['Parts', 'assemble_parts', 'parts_dir']


class Parts:
    """A bounded job's file output, committed split by split: exactly once, whatever restarts.

    The records of split ``k`` go to a temporary file of their own; at the split's end the file is
    renamed to ``part-<k>.jsonl`` (atomically, after ``fsync``). A split that a restart reads
    again — from the last checkpoint on — writes a new temporary file and replaces its part
    whole, so each split's records are in the output once, however often it was read. The
    client joins the parts, in split order, into the sink's file when the job ended
    (:func:`assemble_parts`): the file is then the one ``adf run`` writes."""

    def __init__(self, directory: str) -> None:
        self.dir = directory
        os.makedirs(directory, exist_ok=True)
        self._open: dict[int, tuple[int, str]] = {}
        self._tally: dict[int, dict[str, Any]] = {}

    @staticmethod
    def final(directory: str, k: int) -> str:
        return os.path.join(directory, f"part-{k:06d}.jsonl")

    @staticmethod
    def meta(directory: str, k: int) -> str:
        """Split ``k``'s counts and dead letters, committed just before its part (a detached job's
        summary: :func:`finish_detached`)."""
        return os.path.join(directory, f"part-{k:06d}.meta.json")

    def tally(self, k: int, taken: Mapping[str, Any]) -> None:
        """Add what an element of split ``k`` carried (counts, dead letters) to the split's tally."""
        acc = self._tally.setdefault(k, {"c": {}, "d": []})
        for key, n in (taken.get("c") or {}).items():
            acc["c"][key] = acc["c"].get(key, 0) + int(n)
        acc["d"].extend(taken.get("d") or [])

    def _fd(self, k: int) -> int:
        entry = self._open.get(k)
        if entry is None:
            tmp = os.path.join(self.dir, f"part-{k:06d}.{uuid.uuid4().hex[:12]}.tmp")
            entry = self._open[k] = (os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), tmp)
        return entry[0]

    def write(self, k: int, records: list[Any]) -> None:
        from active_data_flow.formats import encode_jsonl

        data = memoryview(encode_jsonl(records))
        fd = self._fd(k)
        while data:
            data = data[os.write(fd, data):]

    def commit_meta(self, k: int) -> None:
        """Commit split ``k``'s tally (its counts and dead letters) by rename."""
        meta = self._tally.pop(k, {"c": {}, "d": []})
        tmp_meta = self.meta(self.dir, k) + f".{uuid.uuid4().hex[:12]}.tmp"
        with open(tmp_meta, "w", encoding="utf-8") as f:
            json.dump(meta, f, default=str)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_meta, self.meta(self.dir, k))

    def commit(self, k: int) -> None:
        """Commit split ``k``: its tally, then its part."""
        self.commit_meta(k)
        fd = self._fd(k)
        tmp = self._open.pop(k)[1]
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.final(self.dir, k))

    def abort(self) -> None:
        """Parts not committed (the job is cancelled or fails): their temporary files go."""
        for fd, tmp in self._open.values():
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        self._open.clear()


def parts_dir(flow: Any) -> str | None:
    """Where a bounded job's file sink commits its parts (None: the sink writes directly). One
    directory per sink file: a job resumed from a savepoint finds the parts committed before it."""
    sink = flow.sink
    path = str(sink.get("path") or "")
    if sink.get("type") != "file" or not path or "://" in path:
        return None
    return f"{path}.adf-parts"


def assemble_parts(flow: Any, directory: str, count: int, run_ctx: RunContext) -> None:
    """Join the committed parts ``0 … count-1`` into the file sink's file (prepared by the client
    before the job, as :func:`~active_data_flow.engine.setup_destinations` prepares every run's sink), then
    remove them. JSON Lines parts are copied as they are; any other format is written through
    the file sink, so the file is the one the local runner writes."""
    import shutil

    missing = [k for k in range(count) if not os.path.exists(Parts.final(directory, k))]
    if missing:
        raise AdfError(f"the job ended, but the parts of {len(missing)} of its {count} splits are missing "
                       f"from {directory} (first: split {missing[0]}): the output is incomplete")
    sink = registry.build("sink", {**flow.sink, "type": "file"}, run_ctx, mode="append")
    if getattr(sink, "format", None) == "jsonl":
        with open(sink.path, "ab") as out:
            for k in range(count):
                with open(Parts.final(directory, k), "rb") as part:
                    shutil.copyfileobj(part, out, 1 << 20)
            if sink.config.get("fsync"):
                out.flush()
                os.fsync(out.fileno())
    else:
        sink.open()
        try:
            for k in range(count):
                with open(Parts.final(directory, k), encoding="utf-8") as part:
                    batch: list[Any] = []
                    for line in part:
                        batch.append(json.loads(line))
                        if len(batch) >= 5000:
                            sink.write_batch(batch)
                            batch = []
                    if batch:
                        sink.write_batch(batch)
        finally:
            sink.close()
    shutil.rmtree(directory, ignore_errors=True)
