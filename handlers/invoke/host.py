"""Hosts: what a run may use of its environment (specs, store, variables, environment, publish).

Standard library only at module level (this runs inside a Spin component).
"""

from __future__ import annotations

import abc
import os
import sys
import threading
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from active_data_flow.handlers.invoke.errors import PublishUnsupported
from active_data_flow.logs import get_logger
from active_data_flow.redact import redact_text
from active_data_flow.registry import add_import_path
from active_data_flow.state import MemoryStateStore, SqliteStateStore, StateStore

if TYPE_CHECKING:  # the HTTP types only annotate here: the event handlers never load them
    from active_data_flow.handlers.http import Request, Response
    from active_data_flow.handlers.streaming import StreamingResponse



_log = get_logger("invoke")

#: flows kept in the host's key-value store: ``flows/<name>`` holds a spec object
KV_FLOW_PREFIX = "flows/"


@dataclass
class ErrorContext:
    """What an error handler knows besides the exception."""

    request_id: str
    error_id: str
    trigger: str
    status: int
    flow: str | None = None
    request: Request | None = None


#: ``handler(exc, context) -> Response | None``; None: the handler of a base class, else the default answer
ErrorHandler = Callable[[BaseException, ErrorContext], "Response | StreamingResponse | None"]


class FlowHost(abc.ABC):
    """What a target provides to the handlers.

    Subclasses implement :meth:`specs` and override what they have. Class attributes:
    ``persist`` (may runs write files: checkpoints, run records, dead-letter files? False
    inside Spin), ``state_dir`` (where persisting runs keep their files; None:
    ``$ADF_STATE_DIR``). No host takes a flow spec, or any configuration but the declared
    parameters, from a request (:mod:`active_data_flow.handlers.invoke.params`).
    """

    persist: bool = False
    state_dir: str | None = None

    @abc.abstractmethod
    def specs(self) -> Mapping[str, Mapping[str, Any]]:
        """The flows this host knows, by name: bundled at build time, or given. A flow may
        also be stored in :meth:`store` under ``flows/<name>`` (see :func:`lookup_spec`)."""

    def store(self) -> StateStore | None:
        """The key-value store: the ``kv`` config layer (``config/<flow>``) and the flows' state.
        None: no kv layer (and no default SQLite file is opened either)."""
        return None

    def variables(self) -> Mapping[str, str]:
        """Manifest-level settings (spin.toml variables, SAM parameters), name → value.

        Spin has no call that lists variables: return every variable the component declares
        (bundle the names at build time) that has a value. Mapping: :mod:`active_data_flow.handlers.confignames`.
        """
        return {}

    def environ(self) -> Mapping[str, str]:
        """Environment variables for the ``env`` layer (``ADF__SINK__TABLE``...)."""
        return {}

    def publish(self, channel: str, message: bytes) -> None:
        """Publish a result (outbound Redis; an MQTT host may publish to a topic). Raises
        :class:`PublishUnsupported` when the host cannot; other errors are reported by the
        caller, never raised into the host."""
        raise PublishUnsupported(
            f"this host cannot publish results (to {channel!r}): configure outbound Redis for it"
        )

    def memory_bytes(self) -> int | None:
        """The memory in use to report in logs (a component's linear memory size), or None."""
        return None

    @property
    def error_handlers(self) -> dict[type[BaseException], ErrorHandler]:
        """Custom error answers of :func:`handle_http`: exception type → handler."""
        handlers: dict[type[BaseException], ErrorHandler] | None = self.__dict__.get("_error_handlers")
        if handlers is None:
            handlers = self.__dict__["_error_handlers"] = {}
        return handlers

    def register_error_handler(self, exc_type: type[BaseException], handler: ErrorHandler) -> None:
        """``host.error_handlers[exc_type] = handler``."""
        self.error_handlers[exc_type] = handler


def lookup_spec(host: FlowHost, name: str) -> dict[str, Any] | None:
    """The spec of flow ``name``: :meth:`FlowHost.specs`, else ``flows/<name>`` in the store."""
    raw = host.specs().get(name)
    if raw is None:
        store = host.store()
        stored = store.get(KV_FLOW_PREFIX + name) if store is not None else None
        raw = stored if isinstance(stored, Mapping) else None
    if raw is None:
        return None
    spec = dict(raw)
    spec.setdefault("name", name)
    return spec


def flow_names(host: FlowHost) -> list[str]:
    """Every flow the host knows (specs and ``flows/*`` in the store)."""
    names = set(host.specs())
    store = host.store()
    if store is not None:
        names.update(k[len(KV_FLOW_PREFIX) :] for k in store.keys(KV_FLOW_PREFIX))
    return sorted(n for n in names if n)


def host_memory(host: FlowHost) -> int | None:
    try:
        return host.memory_bytes()
    except Exception:
        return None


class LocalHost(FlowHost):
    """The native host: for tests, ``adf serve`` and anything that is not a component.

    ``specs``: a mapping name → spec, a directory of ``*.yaml``/``*.yml``/``*.json`` spec
    files (re-read when they change; the directory is put on ``sys.path`` for step modules),
    or None. ``store``: default a :class:`~active_data_flow.state.SqliteStateStore` in ``state_dir``
    when ``persist``, else a :class:`~active_data_flow.state.MemoryStateStore`. ``environ``: default
    ``os.environ``. ``publisher(channel, message)``, or ``redis_url`` (redis-py, imported
    when first used), publish results; with neither, :meth:`publish` raises
    :class:`PublishUnsupported`. ``allow_payload_spec`` is accepted for older callers and
    has no effect: a request never carries a flow spec (a warning says so when it is true).
    """

    def __init__(
        self,
        specs: Mapping[str, Mapping[str, Any]] | str | os.PathLike[str] | None = None,
        *,
        store: StateStore | None = None,
        state_dir: str | os.PathLike[str] | None = None,
        variables: Mapping[str, str] | None = None,
        environ: Mapping[str, str] | None = None,
        persist: bool = True,
        allow_payload_spec: bool = False,
        publisher: Callable[[str, bytes], None] | None = None,
        redis_url: str | None = None,
    ) -> None:
        self.persist = persist
        if allow_payload_spec:
            warnings.warn(
                "allow_payload_spec has no effect: a request never carries a flow spec (it may set only its "
                "records and the flow's declared parameters); put the flow in the host's specs instead",
                DeprecationWarning, stacklevel=2,
            )
        from active_data_flow.engine import default_state_root

        self.state_dir = os.path.abspath(os.fspath(state_dir)) if state_dir is not None else default_state_root()
        self._specs: dict[str, dict[str, Any]] = {}
        self._dir: str | None = None
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()
        if isinstance(specs, str | os.PathLike):
            self._dir = os.path.abspath(os.fspath(specs))
            add_import_path(self._dir)
        elif specs is not None:
            self._specs = {name: {"name": name, **dict(spec)} for name, spec in specs.items()}
        self._store = store
        self._own_store = store is None
        self._variables: Mapping[str, str] = variables if variables is not None else {}
        self._environ = environ
        self._publisher = publisher
        self._redis_url = redis_url
        self._redis: Any = None
        #: every (channel, message) published, in order (for inspection)
        self.published: list[tuple[str, bytes]] = []

    def specs(self) -> Mapping[str, Mapping[str, Any]]:
        if self._dir is None:
            return self._specs
        with self._lock:
            self._reload()
            return dict(self._specs)

    def _reload(self) -> None:
        assert self._dir is not None
        from active_data_flow.spec import load_spec_file

        try:
            files = sorted(f for f in os.listdir(self._dir) if f.endswith((".yaml", ".yml", ".json")))
        except OSError as exc:
            _log.warning("cannot list the flow directory", extra={"fields": {"dir": self._dir, "error": str(exc)}})
            return
        mtimes = {}
        for f in files:
            path = os.path.join(self._dir, f)
            try:
                mtimes[path] = os.stat(path).st_mtime
            except OSError:
                continue
        if mtimes == self._seen:
            return
        specs: dict[str, dict[str, Any]] = {}
        for path in mtimes:
            try:
                raw = load_spec_file(path)
            except Exception as exc:
                _log.warning("flow spec not loaded", extra={"fields": {"file": path, "error": redact_text(str(exc))}})
                continue
            if isinstance(raw, Mapping):
                name = str(raw.get("name") or os.path.splitext(os.path.basename(path))[0])
                specs[name] = {**raw, "name": name}
        self._specs, self._seen = specs, mtimes

    def store(self) -> StateStore | None:
        if self._store is None:
            with self._lock:
                if self._store is None:
                    if self.persist:
                        assert self.state_dir is not None
                        os.makedirs(self.state_dir, exist_ok=True)
                        self._store = SqliteStateStore(os.path.join(self.state_dir, "state.db"))
                    else:
                        self._store = MemoryStateStore()
        return self._store

    def variables(self) -> Mapping[str, str]:
        return self._variables

    def environ(self) -> Mapping[str, str]:
        return os.environ if self._environ is None else self._environ

    def publish(self, channel: str, message: bytes) -> None:
        if self._publisher is not None:
            self._publisher(channel, message)
        elif self._redis_url:
            if self._redis is None:
                try:
                    import redis
                except ImportError as exc:
                    from active_data_flow.errors import MissingExtraError

                    raise MissingExtraError("redis", "redis", "publishing results to Redis") from exc
                self._redis = redis.Redis.from_url(self._redis_url, socket_timeout=5)
            self._redis.publish(channel, message)
        else:
            super().publish(channel, message)
        self.published.append((channel, message))

    def memory_bytes(self) -> int | None:
        try:
            import resource
        except ImportError:
            return None
        peak = int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
        return peak if sys.platform == "darwin" else peak * 1024

    def close(self) -> None:
        """Close the store this host opened, and the Redis client."""
        if self._own_store and self._store is not None:
            self._store.close()
            self._store = None
        if self._redis is not None:
            self._redis.close()
            self._redis = None
