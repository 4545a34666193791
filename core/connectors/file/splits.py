"""The file source's splits: a whole file or a byte range of one, and the enumerator that finds them."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from active_data_flow.connectors.file.paths import NoFilesError, split_path
from active_data_flow.logs import get_logger, log_event
from active_data_flow.source import Split, SplitEnumeratorContext, StaticSplitEnumerator

if TYPE_CHECKING:
    from active_data_flow.connectors.file.source import FileSource

_log = get_logger("connectors.file")


@dataclass
class FileSplit(Split):
    """A whole file (``end=None``) or the byte range ``[start, end)`` of one.

    ``start_line`` is the 1-based line number at ``start``, or 0 when not counted yet (JSON
    Lines ranges: the reader counts it only for a dead letter); ``size`` is the file size seen
    at discovery. ``position`` is None (from ``start``), ``{"offset", "line"}`` (CSV, JSONL)
    or ``{"index"}`` (JSON array).
    """

    path: str = ""
    start: int = 0
    end: int | None = None
    start_line: int = 1
    format: str = "jsonl"
    size: int | None = None

    def remaining_bytes(self) -> int:
        """Bytes not read yet (for progress)."""
        stop = self.end if self.end is not None else (self.size or 0)
        pos = self.position
        done = pos.get("offset", self.start) if isinstance(pos, dict) else self.start
        return max(0, stop - int(done))


class FileSplitEnumerator(StaticSplitEnumerator):
    """Globs the source's paths into :class:`FileSplit` s (byte ranges with ``split_bytes``, or
    cut automatically for the run's readers: :meth:`FileSource.plan_splits`).

    Bounded: raises :class:`NoFilesError` at start when nothing matches. Unbounded
    (``watch``): every :meth:`discover` globs again and adds files not seen before. When a
    bounded source's splits are fewer than the run's readers, it logs one warning naming each
    file that stayed whole, why, and what would let it be cut; the same list is kept in
    :attr:`uncut`.
    """

    def __init__(
        self, context: SplitEnumeratorContext, source: FileSource, checkpoint: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(context, checkpoint, unbounded=source.watch)
        self.source = source
        #: the files of the last discovery left whole while readers have no split: ``{"file", "size", "reason"}``
        self.uncut: list[dict[str, Any]] = []
        self._warning: dict[str, Any] | None = None

    split_class = FileSplit

    def discover_splits(self) -> list[Split]:
        files = self.source.list_files()
        if not files and not self.unbounded:
            raise NoFilesError(self.source.paths)
        seen_paths = {split_path(s) for s in self._seen}
        new = [(path, size) for path, size in files if path not in seen_paths]
        readers = self.context.parallelism
        splits, self.uncut = self.source.plan_splits(new, readers)
        # a watching run's readers wait for files anyway: the warning is for a bounded run
        if self.uncut and self._warning is None and not self.unbounded:
            self._warning = {
                "message": f"{len(splits)} split(s) for {readers} readers: "
                           f"{readers - len(splits)} reader(s) will have nothing to read",
                "readers": readers, "splits": len(splits), "files": self.uncut,
            }
            log_event(_log, self._warning["message"], logging.WARNING,
                      **{k: v for k, v in self._warning.items() if k != "message"})
        return list(splits)

    def warnings(self) -> list[dict[str, Any]]:
        """The readers left idle because files could not be cut (each file, its size, the
        reason and what would help), as the run's log said when the splits were made."""
        return [self._warning] if self._warning is not None else []
