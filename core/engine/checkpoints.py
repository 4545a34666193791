"""A run's checkpoint files: the enumerator's snapshot, the assignment log and each reader's positions."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    pass


def default_state_root() -> str:
    """``$ADF_STATE_DIR`` or ``./.adf`` (absolute)."""
    return os.path.abspath(os.environ.get("ADF_STATE_DIR") or ".adf")


class Checkpoints:
    """The checkpoint files of one flow, under ``<flow dir>/checkpoint/``.

    ``run.json`` and ``enumerator.json`` are replaced atomically (temp file + ``os.replace``).
    Between two enumerator snapshots, each assignment is appended to ``assignments.log``, so
    a snapshot (whose size grows with the pending splits) is not rewritten per assignment.
    A reader's checkpoint is an append-only log ``reader-N.log``: one JSON line per committed
    batch with the reader's unfinished splits (with positions) and the splits it finished in
    that batch. Appending a line costs far less than a rename per batch, and a process killed
    mid-write leaves at most a torn last line, which :meth:`load_reader` ignores. The log is
    compacted into one line when it grows past ``compact_bytes``.
    """

    def __init__(self, flow_dir: str, *, fsync: bool = False, compact_bytes: int = 1 << 20) -> None:
        self.dir = os.path.join(flow_dir, "checkpoint")
        self.fsync = fsync
        self.compact_bytes = compact_bytes
        self._logs: dict[int, tuple[int, int, set[str]]] = {}  # reader -> (fd, size, finished)
        self._assign_fd: int | None = None

    def _path(self, name: str) -> str:
        return os.path.join(self.dir, name)

    def write(self, name: str, data: Any) -> None:
        os.makedirs(self.dir, exist_ok=True)
        path = self._path(name)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, default=str)
            if self.fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)

    def read(self, name: str) -> Any:
        try:
            with open(self._path(name), encoding="utf-8") as f:
                return json.load(f)
        except FileNotFoundError:
            return None

    # -- the coordinator's assignment log ------------------------------------------

    def log_assignment(self, entry: dict[str, Any]) -> None:
        """Append one assignment (before the reader hears of it)."""
        if self._assign_fd is None:
            os.makedirs(self.dir, exist_ok=True)
            self._assign_fd = os.open(self._path("assignments.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.write(self._assign_fd, json.dumps(entry, default=str).encode() + b"\n")
        if self.fsync:
            os.fsync(self._assign_fd)

    def read_assignments(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        try:
            with open(self._path("assignments.log"), "rb") as f:
                for raw in f:
                    try:
                        out.append(json.loads(raw))
                    except ValueError:
                        break  # torn last line
        except FileNotFoundError:
            pass
        return out

    def truncate_assignments(self) -> None:
        """Drop the log (the enumerator snapshot just written covers it)."""
        if self._assign_fd is not None:
            os.close(self._assign_fd)
            self._assign_fd = None
        with contextlib.suppress(FileNotFoundError):
            os.remove(self._path("assignments.log"))

    # -- reader logs -------------------------------------------------------------

    def _reader_path(self, reader_id: int) -> str:
        return self._path(f"reader-{reader_id}.log")

    def save_reader(self, reader_id: int, splits: list[dict[str, Any]], finished: list[str]) -> None:
        """Append the reader's state after a committed batch (``finished``: splits done in it)."""
        entry = self._logs.get(reader_id)
        if entry is None:
            os.makedirs(self.dir, exist_ok=True)
            fd = os.open(self._reader_path(reader_id), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            entry = (fd, os.fstat(fd).st_size, set())
        fd, size, done = entry
        done.update(finished)
        line = json.dumps({"splits": splits, "finished": finished}, default=str).encode() + b"\n"
        if size + len(line) > self.compact_bytes:
            os.close(fd)
            compact = json.dumps({"splits": splits, "finished": sorted(done)}, default=str).encode() + b"\n"
            tmp = f"{self._reader_path(reader_id)}.tmp"
            with open(tmp, "wb") as f:
                f.write(compact)
            os.replace(tmp, self._reader_path(reader_id))
            fd = os.open(self._reader_path(reader_id), os.O_WRONLY | os.O_APPEND)
            size = len(compact)
        else:
            os.write(fd, line)
            size += len(line)
        if self.fsync:
            os.fsync(fd)
        self._logs[reader_id] = (fd, size, done)

    def load_reader(self, reader_id: int) -> dict[str, Any]:
        """``{"splits": [...last snapshot...], "finished": [...all finished...]}`` (empty when none)."""
        splits: list[dict[str, Any]] = []
        finished: set[str] = set()
        try:
            with open(self._reader_path(reader_id), "rb") as f:
                for raw in f:
                    try:
                        entry = json.loads(raw)
                    except ValueError:
                        break  # a torn last line: the process died while appending
                    splits = entry.get("splits", [])
                    finished.update(entry.get("finished", []))
        except FileNotFoundError:
            pass
        return {"splits": splits, "finished": sorted(finished)}

    def reader_ids(self) -> list[int]:
        if not os.path.isdir(self.dir):
            return []
        return sorted(int(n[7:-4]) for n in os.listdir(self.dir) if n.startswith("reader-") and n.endswith(".log"))

    def remove_reader(self, reader_id: int) -> None:
        entry = self._logs.pop(reader_id, None)
        if entry is not None:
            os.close(entry[0])
        with contextlib.suppress(FileNotFoundError):
            os.remove(self._reader_path(reader_id))

    def close(self) -> None:
        for fd, _, _ in self._logs.values():
            os.close(fd)
        self._logs.clear()
        if self._assign_fd is not None:
            os.close(self._assign_fd)
            self._assign_fd = None

    def clear(self) -> None:
        self.close()
        shutil.rmtree(self.dir, ignore_errors=True)
