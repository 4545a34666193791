"""Apache Iceberg tables through pyiceberg: the ``iceberg`` sink and the ``iceberg`` source.

pyiceberg and pyarrow (extra ``iceberg``) are imported when a connector first touches a
catalog, never at import time; without them :class:`~active_data_flow.errors.MissingExtraError` names
the extra. See ``docs/ICEBERG.md`` for the user guide.

Catalog
    ``catalog`` holds pyiceberg catalog properties (``name``, ``type``, ``uri``,
    ``warehouse``, ``s3.endpoint``…), given to ``pyiceberg.catalog.load_catalog``. Unless
    it names another catalog (``type``, ``uri``, ``py-catalog-impl``, or a ``name`` that
    ``.pyiceberg.yaml`` / ``PYICEBERG_CATALOG__…`` configure), the catalog is pyiceberg's
    SQL catalog on SQLite: ``uri: sqlite:///<warehouse>/catalog.db`` with the warehouse a
    local directory (``warehouse``, default ``<state root>/iceberg``) — or, for a warehouse
    on S3 (``warehouse: s3://bucket/prefix``), ``<state root>/iceberg/catalog.db`` locally.
    S3 settings come from ``endpoint_url`` / ``region`` / ``access_key_id`` /
    ``secret_access_key`` / ``session_token`` (the last three are secrets), else from
    ``AWS_ENDPOINT_URL`` / ``AWS_REGION`` and the AWS SDK's usual credential chain.

``iceberg`` sink
    ``{type: iceberg, table: db.orders, mode: append | upsert, key: [id]}``. A missing
    table is created on the first batch (``create: true``, the default) with a schema
    inferred from that batch (``types`` overrides it per field, ``partition_by`` partitions
    it). ``append`` makes one Iceberg commit per engine batch; ``upsert`` replaces the rows
    whose ``key`` matches (``Table.upsert`` when the installed pyiceberg has it, else
    delete-by-key and append in one transaction) and makes the sink idempotent. A commit
    that loses a race with another writer is retried against the refreshed table.

``iceberg`` source
    ``{type: iceberg, table: db.orders, snapshot_id: …, filter: "amount > 10", columns: [...]}``
    reads one snapshot (the current one when the run enumerates, fixed for the whole run)
    with one :class:`IcebergSplit` per data file; a split's position is the number of rows
    of that file already emitted. Positional delete files and the row filter are applied
    by pyiceberg's reader.

Example::

    sink = IcebergSink(table="db.orders", warehouse="/tmp/wh", mode="upsert", key="id")
    sink.write_batch([{"id": 1, "total": 9.5}])
    rows = list(IcebergSource(table="db.orders", warehouse="/tmp/wh").each())

The modules: ``catalog`` (loading pyiceberg, the catalog properties, the attributes and the
catalog and table loading the sink and the source share), ``schema`` (column type names,
partitions, the types of a new table), ``values`` (record values to Arrow and back), ``sink``
(:class:`IcebergSink`) and ``source`` (:class:`IcebergSplit`, :class:`IcebergSource`, its
enumerator and reader). The names in ``__all__`` are importable from ``active_data_flow.connectors.iceberg``
itself; each module is imported when one of its names is first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from active_data_flow.connectors.iceberg.catalog import catalog_properties
    from active_data_flow.connectors.iceberg.schema import parse_partition, parse_type
    from active_data_flow.connectors.iceberg.sink import IcebergSink
    from active_data_flow.connectors.iceberg.source import IcebergSource, IcebergSplit

__all__ = [
    "IcebergSink",
    "IcebergSource",
    "IcebergSplit",
    "catalog_properties",
    "parse_partition",
    "parse_type",
]


def __getattr__(name: str) -> Any:
    # A name's module is imported when the name is first asked for. A Spin component's build
    # imports every package it walks, this one included, and leaves the Iceberg modules out
    # (they need pyiceberg): there, asking for a name fails as a module that is not part of the build.
    if name == "IcebergSink":
        from active_data_flow.connectors.iceberg import sink

        return sink.IcebergSink
    if name in ("IcebergSource", "IcebergSplit"):
        from active_data_flow.connectors.iceberg import source

        return getattr(source, name)
    if name == "catalog_properties":
        from active_data_flow.connectors.iceberg import catalog

        return catalog.catalog_properties
    if name in ("parse_partition", "parse_type"):
        from active_data_flow.connectors.iceberg import schema

        return getattr(schema, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
