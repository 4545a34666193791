"""The catalog side of the ``iceberg`` connectors: what the sink and the source share.

pyiceberg and pyarrow imported on first use (:func:`import_pyiceberg`, :func:`import_pyarrow`),
the properties handed to ``load_catalog`` (:func:`catalog_properties`), the attributes that
name a catalog and a table (:data:`CATALOG_ATTRIBUTES`) and :class:`CatalogUser`, which loads
the catalog and the table.
"""

from __future__ import annotations

import abc
import os
from collections.abc import Mapping
from typing import Any

from active_data_flow.attributes import Attribute
from active_data_flow.errors import ConfigError, MissingExtraError
from active_data_flow.redact import redact_text

__all__ = [
    "CATALOG_ATTRIBUTES",
    "CatalogUser",
    "catalog_properties",
    "import_pyarrow",
    "import_pyiceberg",
]

#: Name given to the default catalog (and to a ``catalog`` mapping without ``name``).
_DEFAULT_CATALOG = "adf"


# --------------------------------------------------------------------------- imports


def import_pyarrow(what: str) -> Any:
    try:
        import pyarrow
    except ImportError as exc:
        raise MissingExtraError("pyarrow", "iceberg", what) from exc
    return pyarrow


def import_pyiceberg(what: str) -> Any:
    """pyiceberg (and pyarrow, which every read and write needs)."""
    try:
        import pyiceberg
        import pyiceberg.catalog
    except ImportError as exc:
        raise MissingExtraError("pyiceberg", "iceberg", what) from exc
    import_pyarrow(what)
    return pyiceberg


# --------------------------------------------------------------------------- configuration


def _check_table(value: Any) -> str | None:
    parts = str(value).split(".")
    if len(parts) < 2 or not all(p.strip() for p in parts):
        return f"must be namespace.table (e.g. db.orders), got {value!r}"
    return None


def _check_catalog(value: Any) -> str | None:
    for key, item in value.items():
        if not isinstance(key, str) or not key:
            return f"property names must be non-empty strings, got {key!r}"
        if item is not None and not isinstance(item, str | int | float | bool):
            return f"property {key!r} must be a string, number or boolean, got {type(item).__name__}"
    return None


# --------------------------------------------------------------------------- catalog


def _prop(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _is_remote(location: str) -> bool:
    scheme, sep, _ = location.partition("://")
    return bool(sep) and scheme.lower() != "file"


def _local_dir(location: str) -> str:
    path = location[len("file://") :] if location.startswith("file://") else location
    return os.path.abspath(os.path.expanduser(path))


def _state_root() -> str:
    from active_data_flow.engine import default_state_root

    return default_state_root()


def catalog_properties(config: Mapping[str, Any], *, configured: bool = False) -> tuple[str, dict[str, str]]:
    """The catalog name and the properties handed to ``load_catalog`` (see the module doc).

    ``configured`` says that pyiceberg's own configuration (``.pyiceberg.yaml``,
    ``PYICEBERG_CATALOG__<NAME>__…``) defines a catalog of that name: then no default
    catalog type or URI is added. Creates the local warehouse / catalog directory.
    """
    props = {str(k): _prop(v) for k, v in dict(config.get("catalog") or {}).items() if v is not None}
    name = props.pop("name", "") or _DEFAULT_CATALOG
    if not configured and not ({"type", "uri", "py-catalog-impl"} & props.keys()):
        props["type"] = "sql"
    is_sql = props.get("type", "").lower() == "sql"
    warehouse = props.get("warehouse") or config.get("warehouse")
    if not warehouse and is_sql:
        warehouse = os.path.join(_state_root(), "iceberg")
    if warehouse and (is_sql or "warehouse" not in props):
        if not _is_remote(warehouse):
            local = _local_dir(warehouse)
            os.makedirs(local, exist_ok=True)
            warehouse = "file://" + local
        props["warehouse"] = warehouse
    if is_sql and "uri" not in props:
        db_dir = (
            os.path.join(_state_root(), "iceberg")
            if not warehouse or _is_remote(warehouse)
            else _local_dir(warehouse)
        )
        os.makedirs(db_dir, exist_ok=True)
        props["uri"] = "sqlite:///" + os.path.join(db_dir, "catalog.db")
    s3_wanted = bool(warehouse and warehouse.startswith(("s3://", "s3a://"))) or any(
        config.get(k) for k in ("endpoint_url", "region", "access_key_id", "secret_access_key", "session_token")
    )
    if s3_wanted:
        endpoint = (
            config.get("endpoint_url")
            or os.environ.get("AWS_ENDPOINT_URL_S3")
            or os.environ.get("AWS_ENDPOINT_URL")
        )
        if endpoint:
            props.setdefault("s3.endpoint", str(endpoint))
        region = config.get("region") or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        if not region and props.get("s3.endpoint"):
            region = "us-east-1"  # an S3-compatible store: never ask AWS where the bucket lives
        if region and "s3.region" not in props and "client.region" not in props:
            props["s3.region"] = str(region)
        for attr, key in (
            ("access_key_id", "s3.access-key-id"),
            ("secret_access_key", "s3.secret-access-key"),
            ("session_token", "s3.session-token"),
        ):
            if config.get(attr):
                props.setdefault(key, str(config[attr]))
    return name, props


CATALOG_ATTRIBUTES = (
    Attribute(
        "catalog",
        dict,
        default={},
        check=_check_catalog,
        help="pyiceberg catalog properties (name, type, uri, warehouse, s3.*); default: a SQLite SQL catalog",
    ),
    Attribute("table", str, required=True, check=_check_table, help="namespace.table, e.g. db.orders"),
    Attribute(
        "warehouse",
        str,
        help="local directory or s3://bucket/prefix for the default catalog; default <state root>/iceberg",
    ),
    Attribute("endpoint_url", str, help="S3-compatible endpoint (MinIO); default AWS_ENDPOINT_URL"),
    Attribute("region", str, help="S3 region; default AWS_REGION / AWS_DEFAULT_REGION"),
    Attribute("access_key_id", str, secret=True, help="S3 access key; default: the AWS credential chain"),
    Attribute("secret_access_key", str, secret=True, help="S3 secret key; default: the AWS credential chain"),
    Attribute("session_token", str, secret=True, help="S3 session token; default: the AWS credential chain"),
)


class CatalogUser:
    """What the sink and the source share: the catalog, the table identifier, messages."""

    config: dict[str, Any]
    _catalog: Any

    @property
    @abc.abstractmethod
    def where(self) -> str:
        """How messages name the connector (``sink 'iceberg'``…); the sink and the source say."""

    @property
    def identifier(self) -> str:
        return str(self.config["table"])

    def catalog_properties(self) -> tuple[str, dict[str, str]]:
        """Catalog name and properties (may contain secrets: never log them unredacted)."""
        name = (self.config.get("catalog") or {}).get("name") or _DEFAULT_CATALOG
        return catalog_properties(self.config, configured=_configured_elsewhere(str(name)))

    def load_catalog(self) -> Any:
        """The pyiceberg catalog (created once per object)."""
        if self._catalog is None:
            import_pyiceberg(self.where)
            from pyiceberg.catalog import load_catalog

            name, props = self.catalog_properties()
            try:
                self._catalog = load_catalog(name, **props)
            except ValueError as exc:
                raise ConfigError(self.where, [f"'catalog': {redact_text(str(exc))}"]) from None
        return self._catalog

    def release_catalog(self) -> None:
        """Drop the catalog and close its database connections (it is loaded again when needed)."""
        catalog, self._catalog = self._catalog, None
        engine = getattr(catalog, "engine", None)  # the SQL catalog's SQLAlchemy engine
        if engine is not None:
            try:
                engine.dispose()
            except Exception:  # pragma: no cover - best effort
                pass

    def load_table(self) -> Any:
        """The table, or None when it does not exist."""
        from pyiceberg.exceptions import NoSuchTableError

        try:
            return self.load_catalog().load_table(self.identifier)
        except NoSuchTableError:
            return None

    def _describe_location(self) -> str:
        catalog = dict(self.config.get("catalog") or {})
        if catalog.get("uri"):
            return redact_text(str(catalog["uri"]))
        if catalog.get("name") and not catalog.get("warehouse"):
            return f"catalog {catalog['name']}"
        return str(catalog.get("warehouse") or self.config.get("warehouse") or "<state root>/iceberg")


def _configured_elsewhere(name: str) -> bool:
    """Whether pyiceberg's configuration (file or environment) defines the catalog ``name``."""
    try:
        from pyiceberg.utils.config import Config
    except ImportError:
        return False
    try:
        return Config().get_catalog_config(name) is not None
    except Exception:  # a broken .pyiceberg.yaml: load_catalog reports it
        return False
