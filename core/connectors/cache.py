"""The ``cache`` sink: each record stored as a JSON value under a key made from one of its fields.

``{type: cache, key_attribute: id, key_prefix: "orders:", ttl: 3600, url: "redis://localhost:6379/0"}``
stores record ``{"id": 7, …}`` as the JSON text of the whole record under ``orders:7``,
expiring after an hour. Where it goes:

* ``url: redis://…`` / ``rediss://…`` — that Redis server, one pipeline per batch; the keys are
  exactly ``key_prefix + value`` (no other prefix), so any Redis client can read them;
* ``url`` naming another state store (``sqlite:///cache.db``, ``memory://``) — that store
  (see :func:`active_data_flow.state.open_state_store`);
* no ``url`` — the flow's own state store (``run_context.store``), or the embedded default
  store when the run has none.

``key_prefix`` defaults to ``"<flow_name>:"``. Writing a record again replaces its value, so
the sink is idempotent. Redis needs the ``redis`` extra (imported when the sink opens).

Example::

    sink = CacheSink(key_attribute="id", key_prefix="orders:", ttl=60)
    sink.run_context = RunContext(flow_name="orders", store=MemoryStateStore())
    sink.write_batch([{"id": 7, "total": 9.5}])
    assert sink.run_context.store.get("orders:7") == {"id": 7, "total": 9.5}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from active_data_flow.attributes import Attribute
from active_data_flow.codec import codec
from active_data_flow.errors import MissingExtraError, RecordValidationError
from active_data_flow.record import Record
from active_data_flow.redact import redact_text
from active_data_flow.sink import Sink

if TYPE_CHECKING:
    from active_data_flow.state import StateStore

__all__ = ["CacheSink"]


def _check_ttl(value: Any) -> str | None:
    return None if value > 0 else f"must be a positive number of seconds, got {value}"


def _is_redis(url: str) -> bool:
    return url.partition("://")[0].lower() in ("redis", "rediss")


class CacheSink(Sink):
    """Stores every record under ``key_prefix + str(record[key_attribute])``.

    Contract:

    * every key of a batch is computed before anything is written: a record without
      ``key_attribute`` (or with a null, list or mapping value there) raises
      :class:`~active_data_flow.errors.RecordValidationError` naming the attribute, and nothing of
      that batch is written;
    * the value is the whole record as JSON; ``ttl`` (seconds) sets an expiry on every key
      written, no ``ttl`` keeps keys until replaced or deleted;
    * on Redis a batch is one pipeline (not a transaction); when :meth:`write_batch`
      returns, Redis has acknowledged every key.
    """

    type_name = "cache"
    idempotent = True
    attributes = (
        Attribute("key_attribute", str, required=True, help="the record field whose value makes the key"),
        Attribute("key_prefix", str, help="prepended to every key; default '<flow_name>:'"),
        Attribute("ttl", float, check=_check_ttl, help="expiry of each key in seconds; none = no expiry"),
        Attribute(
            "url",
            str,
            secret=True,
            help="redis://host:6379/0 or a state store URL; default: the flow's state store",
        ),
    )

    def __init__(self, config: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self._redis: Any = None
        self._store: StateStore | None = None
        self._own_store = False

    # -- life cycle

    def open(self) -> None:
        if self._redis is not None or self._store is not None:
            return
        url = self.config["url"]
        if url and _is_redis(url):
            try:
                import redis
            except ImportError as exc:
                raise MissingExtraError("redis", "redis", "the cache sink with a Redis URL") from exc
            self._redis = redis.Redis.from_url(url)
            return
        if not url and self.run_context.store is not None:
            self._store = self.run_context.store
            return
        from active_data_flow.state import open_state_store

        self._store = open_state_store(url or None)
        self._own_store = True

    def close(self) -> None:
        if self._redis is not None:
            self._redis.close()
            self._redis = None
        if self._store is not None and self._own_store:
            self._store.close()
        self._store = None
        self._own_store = False

    def describe(self) -> str:
        where = redact_text(self.config["url"]) if self.config["url"] else "the flow's state store"
        return f"cache {where} prefix {self.prefix!r}"

    # -- writing

    @property
    def prefix(self) -> str:
        """The key prefix: ``key_prefix`` when configured (even empty), else ``"<flow_name>:"``."""
        configured = self.config["key_prefix"]
        return str(configured) if configured is not None else f"{self.run_context.flow_name}:"

    def key_for(self, record: Record) -> str:
        """The key ``record`` is stored under; :class:`RecordValidationError` when it has none."""
        name = self.config["key_attribute"]
        if name not in record:
            raise RecordValidationError(name, "missing: the cache sink builds each key from this field")
        value = record[name]
        if value is None or isinstance(value, dict | list):
            shown = "null" if value is None else type(value).__name__
            raise RecordValidationError(
                name, f"the cache key value is {shown}; it must be a string or a number"
            )
        return f"{self.prefix}{value}"

    def write_batch(self, records: Sequence[Record]) -> None:
        if not records:
            return
        items = [(self.key_for(r), r) for r in records]
        self.open()
        ttl: float | None = self.config["ttl"]
        if self._redis is not None:
            px = None if ttl is None else max(1, round(ttl * 1000))
            dumps = codec().dumps
            pipe = self._redis.pipeline(transaction=False)
            for key, record in items:
                pipe.set(key, dumps(record), px=px)
            pipe.execute()
            return
        assert self._store is not None
        for key, record in items:
            self._store.set(key, record, ttl)
