"""What a connector or a step knows about the run it is part of."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, overload

__all__ = ["RunContext", "RunContextSlot", "RunNotes"]


class RunNotes:
    """What connectors ask the run's summary to say besides its counts: warnings and schema changes.

    Entries are de-duplicated as they arrive: the same warning (same message and details) is
    kept once with a ``count`` of how often it was reported, the same added column (table and
    column) once. A reader process sends what it noted since its last batch to the coordinator
    with its progress (:meth:`take`), where the entries are merged (:meth:`merge`), so two
    readers adding the same column appear once. Meant to be called per batch or per page at
    most, never per record.
    """

    def __init__(self) -> None:
        self._warnings: dict[str, dict[str, Any]] = {}
        self._changes: dict[tuple[str, str], dict[str, Any]] = {}
        self._new_warnings: dict[str, dict[str, Any]] = {}
        self._new_changes: dict[tuple[str, str], dict[str, Any]] = {}

    def warn(self, message: str, **details: Any) -> None:
        """Add ``{"message": message, **details}`` to the summary's warnings (or count it again)."""
        self._add_warning({"message": message, **details, "count": 1})

    def schema_change(self, table: str, column: str, type: str, **details: Any) -> None:
        """Record that ``column`` (of SQL or Iceberg type ``type``) was added to ``table``."""
        entry = {"table": table, "column": column, "type": type, **details}
        key = (table, column)
        self._changes.setdefault(key, entry)
        self._new_changes.setdefault(key, entry)

    def _add_warning(self, entry: dict[str, Any]) -> None:
        key = json.dumps({k: v for k, v in entry.items() if k != "count"}, sort_keys=True, default=str)
        count = int(entry.get("count") or 1)
        for book in (self._warnings, self._new_warnings):
            known = book.get(key)
            if known is None:
                book[key] = {**entry, "count": count}
            else:
                known["count"] += count

    def take(self) -> dict[str, Any] | None:
        """What was noted since the last call (to send to the coordinator), or None when nothing."""
        if not self._new_warnings and not self._new_changes:
            return None
        out = {
            "warnings": list(self._new_warnings.values()),
            "schema_changes": list(self._new_changes.values()),
        }
        self._new_warnings, self._new_changes = {}, {}
        return out

    def merge(self, taken: dict[str, Any] | None) -> None:
        """Add what another process :meth:`take`-s."""
        if not taken:
            return
        for entry in taken.get("warnings") or ():
            self._add_warning(dict(entry))
        for entry in taken.get("schema_changes") or ():
            self.schema_change(**dict(entry))

    def warnings(self) -> list[dict[str, Any]]:
        """The warnings, in the order first reported; ``count`` only where one was repeated."""
        return [{k: v for k, v in w.items() if k != "count" or v > 1} for w in self._warnings.values()]

    def schema_changes(self) -> list[dict[str, Any]]:
        return [dict(c) for c in self._changes.values()]


@dataclass
class RunContext:
    """What a connector knows about the run it is part of.

    ``state_dir`` is the run's own directory (checkpoints, default dead letters);
    ``resuming`` is true when the run continues from a checkpoint, so a sink must not
    truncate what an earlier attempt wrote; ``store`` is the flow's state store (or None);
    ``notes`` collects what the run's summary should say (:meth:`warn`, :meth:`schema_change`).
    """

    flow_name: str = "flow"
    run_id: str = "run"
    state_dir: str = ".adf"
    resuming: bool = False
    reader_id: int = 0
    parallelism: int = 1
    store: Any = None
    extras: dict[str, Any] = field(default_factory=dict)
    notes: RunNotes = field(default_factory=RunNotes)

    def warn(self, message: str, **details: Any) -> None:
        """A warning for the run's summary (``adf run`` prints it); repeated ones are counted, not repeated."""
        self.notes.warn(message, **details)

    def schema_change(self, table: str, column: str, type: str, **details: Any) -> None:
        """A column a sink added to ``table``: listed in the summary's ``schema_changes``."""
        self.notes.schema_change(table, column, type, **details)


class RunContextSlot:
    """The ``run_context`` attribute of sources and sinks: the engine sets it before it uses the
    connector; until then each instance has a :class:`RunContext` of its own (never one shared by
    every instance of a class, which one connector's changes would leak into another's)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.key = f"_{name}_value"

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> RunContextSlot: ...

    @overload
    def __get__(self, obj: object, owner: type | None = None) -> RunContext: ...

    def __get__(self, obj: object | None, owner: type | None = None) -> RunContext | RunContextSlot:
        if obj is None:
            return self
        found = obj.__dict__.get(self.key)
        if found is None:
            found = obj.__dict__[self.key] = RunContext()
        return found

    def __set__(self, obj: object, value: RunContext) -> None:
        obj.__dict__[self.key] = value
