"""The ``iceberg`` source: one snapshot of a table, one split per data file.

:class:`IcebergSource` plans the splits of the run's snapshot (fixed for the whole run); its
reader streams the Arrow batches of one data file at a time, with positional deletes and the
row filter applied by pyiceberg, and a split's position is the number of rows of its file
already emitted.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from active_data_flow.attributes import Attribute, checked_init, column_names
from active_data_flow.connectors.iceberg.catalog import (
    CATALOG_ATTRIBUTES,
    CatalogUser,
    import_pyarrow,
    import_pyiceberg,
)
from active_data_flow.connectors.iceberg.schema import as_names
from active_data_flow.connectors.iceberg.values import batch_records
from active_data_flow.errors import ConfigError
from active_data_flow.record import Record
from active_data_flow.source import (
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

__all__ = ["IcebergSource", "IcebergSplit"]


@dataclass(init=False)
class IcebergSplit(Split):
    """One data file of one snapshot: ``split_id`` and ``path`` are the file's location.

    ``position`` is the number of rows of the file already emitted (after deletes and the
    row filter), so a resumed reader skips that many; ``record_count`` and ``file_size``
    come from the manifest (progress), ``delete_files`` counts the delete files that apply.
    """

    path: str = ""
    snapshot_id: int | None = None
    record_count: int = 0
    file_size: int = 0
    delete_files: int = 0

    def __init__(
        self,
        split_id: str,
        position: Any = None,
        path: str = "",
        snapshot_id: int | None = None,
        record_count: int = 0,
        file_size: int = 0,
        delete_files: int = 0,
    ) -> None:
        self.split_id = split_id
        self.position = position
        self.path = path or split_id
        self.snapshot_id = snapshot_id
        self.record_count = record_count
        self.file_size = file_size
        self.delete_files = delete_files

    @property
    def emitted(self) -> int:
        return int(self.position or 0)

    def remaining_bytes(self) -> int:
        if self.record_count <= 0:
            return self.file_size if not self.emitted else 0
        left = max(0, self.record_count - self.emitted)
        return self.file_size * left // self.record_count


class _IcebergEnumerator(StaticSplitEnumerator):
    """Plans the splits once (one per data file of the run's snapshot)."""

    def __init__(
        self, context: SplitEnumeratorContext, checkpoint: Mapping[str, Any] | None, source: IcebergSource
    ) -> None:
        super().__init__(context, checkpoint)
        self._source = source

    def discover_splits(self) -> list[Split]:
        try:
            return list(self._source.plan_splits())
        finally:
            self._source.release_catalog()  # reader processes open their own

    split_class = IcebergSplit


@dataclass
class _Plan:
    """A planned scan of one snapshot: pyiceberg's scan and its tasks by data file path."""

    scan: Any
    tasks: dict[str, Any]


class _IcebergReader(SplitReader):
    """Reads :class:`IcebergSplit` s, streaming the Arrow batches of one data file at a time."""

    def __init__(self, context: SourceReaderContext, source: IcebergSource) -> None:
        super().__init__(context)
        self._source = source
        self._plans: dict[int | None, _Plan] = {}
        self._batches: Iterator[Any] | None = None
        self._leftover: Any = None
        self._pa: Any = None

    def _plan(self, snapshot_id: int | None) -> _Plan:
        plan = self._plans.get(snapshot_id)
        if plan is None:
            scan = self._source.scan(snapshot_id)
            plan = _Plan(scan, {task.file.file_path: task for task in scan.plan_files()})
            self._plans[snapshot_id] = plan
        return plan

    def open_split(self, split: Split) -> None:
        assert isinstance(split, IcebergSplit), f"not an IcebergSplit: {split!r}"
        self._pa = import_pyarrow(self._source.where)
        plan = self._plan(split.snapshot_id)
        task = plan.tasks.get(split.path)
        if task is None:
            raise ConfigError(
                self._source.where,
                [
                    f"data file {split.path} is not part of snapshot {split.snapshot_id} of {self._source.identifier} "
                    "any more (was the snapshot expired?); start a new run without resuming"
                ],
            )
        self._batches = _record_batches(plan.scan, task)
        self._leftover = None
        skip = split.emitted
        while skip > 0:
            batch = next(self._batches, None)
            if batch is None:
                break
            if batch.num_rows <= skip:
                skip -= batch.num_rows
                continue
            self._leftover = batch.slice(skip)
            skip = 0

    def close_split(self, split: Split) -> None:
        batches, self._batches = self._batches, None
        self._leftover = None
        close = getattr(batches, "close", None)
        if close is not None:
            close()

    def close(self) -> None:
        super().close()
        self._plans.clear()
        self._source.release_catalog()

    def _next_batch(self) -> Any:
        while self._leftover is None or self._leftover.num_rows == 0:
            assert self._batches is not None
            batch = next(self._batches, None)
            if batch is None:
                return None
            self._leftover = batch
        return self._leftover

    def read_split(self, split: Split, max_records: int) -> tuple[ReaderBatch, bool]:
        assert isinstance(split, IcebergSplit)
        records: list[Record] = []
        while len(records) < max_records:
            batch = self._next_batch()
            if batch is None:
                break
            take = min(max_records - len(records), batch.num_rows)
            records.extend(batch_records(self._pa, batch.slice(0, take)))
            self._leftover = batch.slice(take) if take < batch.num_rows else None
        done = self._next_batch() is None  # looks ahead, so a finished file ends with its last rows
        before = split.remaining_bytes()
        split.position = split.emitted + len(records)
        after = 0 if done else split.remaining_bytes()
        return ReaderBatch(records, ReaderStatus.MORE_AVAILABLE, input_bytes=max(0, before - after)), done


def _record_batches(scan: Any, task: Any) -> Iterator[Any]:
    """The Arrow batches of one scan task with its deletes and the scan's row filter applied.

    Streams the file batch by batch where pyiceberg allows it (its public
    ``ArrowScan.to_record_batches`` materialises a whole file first).
    """
    from pyiceberg.io import pyarrow as pyiceberg_arrow

    arrow_scan = pyiceberg_arrow.ArrowScan(
        scan.table_metadata, scan.io, scan.projection(), scan.row_filter, scan.case_sensitive
    )
    stream = getattr(arrow_scan, "_record_batches_from_scan_tasks_and_deletes", None)
    read_deletes = getattr(pyiceberg_arrow, "_read_all_delete_files", None)
    if stream is not None and read_deletes is not None:
        try:
            return iter(stream([task], read_deletes(scan.io, [task])))
        except TypeError:  # another signature in this pyiceberg version
            pass
    return iter(arrow_scan.to_record_batches([task]))


class IcebergSource(CatalogUser, Source):
    """Reads one snapshot of an Iceberg table; see the package docstring and ``docs/ICEBERG.md``.

    Contract:

    * the snapshot is ``snapshot_id``, else the table's current snapshot when the run plans
      its splits; every split carries it, so a resumed run reads the same snapshot (commits
      made meanwhile wait for the next run); a table without snapshots has no splits;
    * one split per data file, sorted by path; rows of a file come in file order, after
      positional delete files and the row ``filter`` are applied; ``columns`` projects;
    * values are JSON-friendly like the sql source's: Decimal → exact digit string,
      timestamp/date/time → ISO string, binary → base64, UUID → string, map → dict,
      struct → dict, list → list;
    * equality delete files are not supported by pyiceberg: planning such a snapshot fails.
    """

    type_name = "iceberg"
    attributes = (
        *CATALOG_ATTRIBUTES,
        Attribute("snapshot_id", int, help="read this snapshot; default: the current one at the start of the run"),
        Attribute("filter", str, help="row filter, e.g. \"amount > 10 and country = 'FR'\""),
        Attribute("columns", list, check=column_names, help="read only these columns"),
        Attribute("case_sensitive", bool, default=True, help="match column names in filter/columns case-sensitively"),
    )

    def __init__(self, config: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        checked_init(self, config, kwargs, lambda values: [])
        self.columns: list[str] | None = as_names(self.config["columns"]) or None
        self._catalog: Any = None

    @property
    def where(self) -> str:
        return f"source 'iceberg' (table {self.config['table']!r})"

    def describe(self) -> str:
        return f"iceberg table {self.identifier} ({self._describe_location()})"

    def _table(self) -> Any:
        table = self.load_table()
        if table is None:
            raise ConfigError(self.where, [f"'table': {self.identifier} does not exist"])
        return table

    def scan(self, snapshot_id: int | None) -> Any:
        """pyiceberg's scan of ``snapshot_id`` with the configured filter and columns (checked)."""
        import_pyiceberg(self.where)
        from pyiceberg.expressions import AlwaysTrue
        from pyiceberg.expressions.parser import parse

        table = self._table()
        problems: list[str] = []
        row_filter: Any = AlwaysTrue()
        if self.config["filter"]:
            try:
                row_filter = parse(self.config["filter"])
            except Exception as exc:
                problems.append(f"'filter': cannot parse {self.config['filter']!r}: {exc}")
        if snapshot_id is not None and table.snapshot_by_id(snapshot_id) is None:
            known = ", ".join(str(s.snapshot_id) for s in table.snapshots()) or "none"
            problems.append(f"'snapshot_id': table {self.identifier} has no snapshot {snapshot_id} (snapshots: {known})")
        if problems:
            raise ConfigError(self.where, problems)
        scan = table.scan(
            row_filter=row_filter,
            selected_fields=tuple(self.columns) if self.columns else ("*",),
            case_sensitive=bool(self.config["case_sensitive"]),
            snapshot_id=snapshot_id,
        )
        columns = [f.name for f in table.schema().fields]
        if self.columns:
            missing = [c for c in self.columns if c not in columns] if self.config["case_sensitive"] else [
                c for c in self.columns if c.lower() not in {n.lower() for n in columns}
            ]
            if missing:
                raise ConfigError(
                    self.where,
                    [f"'columns': {c!r} is not a column of {self.identifier} (its columns: {', '.join(columns)})"
                     for c in missing],
                )
        try:
            scan.projection()
            from pyiceberg.expressions.visitors import bind

            bind(table.schema(), row_filter, case_sensitive=bool(self.config["case_sensitive"]))
        except ValueError as exc:
            raise ConfigError(self.where, [f"'filter': {exc} (columns: {', '.join(columns)})"]) from None
        return scan

    def plan_splits(self) -> list[IcebergSplit]:
        """One split per data file of the snapshot read by this run (none for an empty table)."""
        import_pyiceberg(self.where)
        table = self._table()
        snapshot_id = self.config["snapshot_id"]
        if snapshot_id is None:
            current = table.current_snapshot()
            if current is None:
                return []
            snapshot_id = int(current.snapshot_id)
        splits = [
            IcebergSplit(
                task.file.file_path,
                snapshot_id=snapshot_id,
                record_count=int(task.file.record_count),
                file_size=int(task.file.file_size_in_bytes),
                delete_files=len(task.delete_files),
            )
            for task in self.scan(snapshot_id).plan_files()
        ]
        splits.sort(key=lambda s: s.split_id)
        return splits

    # -- Source factory methods

    def create_enumerator(
        self, context: SplitEnumeratorContext, checkpoint: Mapping[str, Any] | None = None
    ) -> SplitEnumerator:
        return _IcebergEnumerator(context, checkpoint, self)

    def create_reader(self, context: SourceReaderContext) -> SourceReader:
        return _IcebergReader(context, self)

    split_class = IcebergSplit

    def total_work(self, splits: Sequence[Split]) -> int | None:
        return sum(s.remaining_bytes() for s in splits if isinstance(s, IcebergSplit))
