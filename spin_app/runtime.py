"""What the four components share: the Spin :class:`~active_data_flow.handlers.invoke.FlowHost`, the bundle
of flows and routes, the schedule store on Spin SQLite, and start-up.

Importing this module (which every entry module does at build time, while componentize-py
pre-initialises the component) imports every module of ``core``/``handlers`` a run may need
and the standard-library modules they import lazily: inside a component only modules that
were imported at build time exist (the source files are not in the component).

Where a component's settings come from (the component variables are those of
:mod:`active_data_flow.spin_app.manifest`; each one overrides the bundle):

===================  ======================================  ==================================
setting              variable                                bundle (``spin_app/_bundle.py``)
===================  ======================================  ==================================
flows                ``adf_flows`` (JSON name → mounted path) ``SPECS`` (specs bundled at build)
routes               ``adf_routes`` (JSON key → flow)        ``ROUTES[kind]``
Redis channel        ``adf_channel``                         the only Redis route, if one
reply channel        ``adf_response_channel``                ``<channel>:results``
outbound Redis       ``adf_redis_address``                   ``REDIS_ADDRESS``
MQTT results topic   ``adf_mqtt_response_topic``             ``<topic>/results``
                     (``{topic}``: the request's topic)
MQTT results via     ``adf_mqtt_response_via``:              ``mqtt``
                     ``mqtt`` or ``redis``
outbound MQTT        ``adf_mqtt_address`` (mqtt://h:1883),   —
                     ``adf_mqtt_username``/``_password``
config (manifest)    ``adf_config`` / ``adf_*`` variables    ``VARIABLES`` (names to read)
HTTP body limit      ``adf_max_body_bytes``, else the        6 MiB (:func:`max_body_bytes`)
                     ``ADF_MAX_BODY_BYTES`` environment
===================  ======================================  ==================================

What a request (HTTP, a Redis or MQTT message) may set is the same everywhere: its records
and the flow's declared parameters (:mod:`active_data_flow.handlers.invoke.params`).
"""

from __future__ import annotations

# spin_sdk is imported here, at build time: inside a component a module that was not
# imported while componentize-py pre-initialised it cannot be imported later.
import gc
import importlib
import json
import os
import pkgutil
import sys
from collections.abc import Mapping
from typing import Any

import active_data_flow
import active_data_flow.handlers
from active_data_flow.handlers.invoke import FlowHost, PublishUnsupported
from active_data_flow.spin_app import connectors
from active_data_flow.spin_app.platform import SpinCallError, platform

__all__ = [
    "SpinHost", "bundle", "bundle_base_path", "host", "max_body_bytes", "mqtt_response_topic", "redis_channel",
    "schedule_store", "start",
]

# Standard-library modules that the modules below import inside functions.
_LAZY_STDLIB = ("io", "difflib", "traceback", "zoneinfo")  # zoneinfo: calendars in a time zone
# Not in a component: what cannot run there (`adf spin validate` refuses the connectors and
# steps that need them — sockets, SQLAlchemy, wasmtime, paramiko — naming the reason) and the
# native edges (web app, CLIs, the SQLAlchemy schedule store). Left out of the snapshot, they
# keep every instance smaller; a flow that names one gets "not available here" (422).
_SKIP = (
    "active_data_flow.handlers.web", "active_data_flow.handlers.cli", "active_data_flow.cli", "active_data_flow.handlers.schedule.sql", "active_data_flow.handlers.schedule.migrations",
    "active_data_flow.wasm", "active_data_flow.steps_io", "active_data_flow.rafka_cli", "active_data_flow.connectors.sql", "active_data_flow.connectors.iceberg",
    "active_data_flow.connectors.sftp", "active_data_flow.connectors.rafka", "active_data_flow.connectors.cache", "active_data_flow.connectors.http",
)

#: the trigger this component is built for: its entry module is being imported right now
KIND = next((k for k in ("http", "redis", "cron", "mqtt") if f"active_data_flow.spin_app.{k}_component" in sys.modules), None)
# Only the cron component runs the heartbeat's scheduler (and reads its settings file).
_CRON_ONLY = ("active_data_flow.handlers.invoke.cron", "active_data_flow.handlers.scheduler", "active_data_flow.handlers.schedule", "active_data_flow.handlers.settings",
              "active_data_flow.handlers.security")


def _preload() -> list[str]:
    """Import every stdlib-only module of the project now (at build time); return failures."""
    cron = KIND in ("cron", None)
    # the component entry modules are not the engine's: they are being imported now
    hosts = ("active_data_flow.spin_app", "active_data_flow.lambda_app", "active_data_flow.flink_job")
    skip = _SKIP + hosts if cron else _SKIP + _CRON_ONLY + hosts
    failed = []
    for name in _LAZY_STDLIB + (("tomllib",) if cron else ()):  # tomllib: the settings file
        try:
            importlib.import_module(name)
        except Exception:
            failed.append(name)
    # the engine, then the handlers (a subpackage: in a component it lies inside the engine's
    # folder, in a checkout beside it)
    for package in (active_data_flow, active_data_flow.handlers):
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if any(info.name == s or info.name.startswith(s + ".") for s in skip):
                continue
            try:
                importlib.import_module(info.name)
            except Exception:
                failed.append(info.name)
    return failed


# The spin-sdk modules the platform seam (active_data_flow.spin_app.platform) imports inside functions.
for _name in ("spin_sdk.key_value", "spin_sdk.redis", "spin_sdk.sqlite", "spin_sdk.variables",
              "spin_sdk.wit.imports.redis", "spin_sdk.wit.imports.mqtt", "spin_sdk.wit.imports.sqlite", "spin_sdk.wit.imports.outgoing_handler",
              "spin_sdk.wit.imports.types", "spin_sdk.wit.imports.streams", "spin_sdk.wit.imports.wasi_config_store"):
    importlib.import_module(_name)

PRELOAD_FAILED = _preload()

try:  # generated by active_data_flow.spin_app.build into the component's sources
    from active_data_flow.spin_app import _bundle as bundle  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - a build without flows
    bundle = None

# The flows' step modules must be imported now too: after the build nothing new imports.
STEP_MODULES_FAILED: list[str] = []
for _name in getattr(bundle, "STEP_MODULES", []) if bundle is not None else []:
    try:
        importlib.import_module(_name)
    except Exception:
        STEP_MODULES_FAILED.append(_name)


def _bundled(name: str, default: Any) -> Any:
    return getattr(bundle, name, default) if bundle is not None else default


def _load_zones() -> dict[str, Any]:
    """The time zones the bundled calendars name (``runtime.schedule``, cron routes), loaded now:
    in a component this runs while it is built, where the bundled ``tzdata`` package is readable;
    a running component has no zone database, and :mod:`zoneinfo` hands out these instances
    (its cache keeps them while they live). A zone that does not load is refused later, with
    the reason, where its schedule is read."""
    from active_data_flow.cron import CronError, named_zones, resolve_timezone, spec_schedule_text

    specs = _bundled("SPECS", {})
    calendars = [*map(spec_schedule_text, specs.values()), *dict(_bundled("ROUTES", {}).get("cron", {})).values()]
    zones = {}
    for name in sorted(named_zones(calendars)):
        try:
            zones[name] = resolve_timezone(name)
        except CronError:
            continue
    return zones


#: the bundled calendars' zones, kept alive for the component's whole life
ZONES = _load_zones()


def _json_var(name: str) -> Any:
    raw = platform().variable(name)
    if raw in (None, ""):
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw


class SpinHost(FlowHost):
    """The :class:`~active_data_flow.handlers.invoke.FlowHost` inside a Spin component.

    ``persist`` is False (no writable files: no checkpoints, one in-process reader, dead
    letters in the summary); the key-value store (``default``) is the ``kv`` config layer
    and the flows' state store; spin.toml variables are the manifest layer; results are
    published with outbound Redis (the MQTT component's with outbound MQTT by default).
    """

    persist = False

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._specs: dict[str, dict[str, Any]] | None = None
        self._store: Any = None
        self._store_checked = False

    # -- flows -----------------------------------------------------------------------------

    def specs(self) -> Mapping[str, Mapping[str, Any]]:
        if self._specs is None:
            specs: dict[str, dict[str, Any]] = {k: dict(v) for k, v in _bundled("SPECS", {}).items()}
            mounted = _json_var("adf_flows")
            if isinstance(mounted, Mapping):
                # adf_flows names the flows this component runs: only those are served.
                specs = {k: v for k, v in specs.items() if k in mounted}
                for name, path in mounted.items():
                    if name in specs:
                        continue
                    try:
                        with open(str(path), encoding="utf-8") as f:
                            loaded = json.load(f) if str(path).endswith(".json") else _load_yaml(f.read())
                    except (OSError, ValueError):
                        continue
                    if isinstance(loaded, Mapping):
                        specs[str(name)] = dict(loaded)
            self._specs = specs
        return self._specs

    def routes(self) -> dict[str, str]:
        """Channel/topic (or HTTP path) → flow for this component's trigger kind."""
        given = _json_var("adf_routes")
        raw = given if isinstance(given, Mapping) else _bundled("ROUTES", {}).get(self.kind, {})
        out: dict[str, str] = {}
        for key, flow in dict(raw).items():
            out[str(key)] = str(flow[0] if isinstance(flow, list) and flow else flow)
        return out

    # -- layers ----------------------------------------------------------------------------

    def store(self) -> Any:
        if not self._store_checked:
            self._store_checked = True
            try:
                store = connectors.SpinKvStateStore("default")
                store.open()  # a component without the store gets None
                self._store = store
            except SpinCallError:
                self._store = None
        return self._store

    def variables(self) -> Mapping[str, str]:
        out: dict[str, str] = {}
        for name in _bundled("VARIABLES", ()):
            value = platform().variable(name)
            if value is not None:
                out[name] = value
        return out

    def environ(self) -> Mapping[str, str]:
        return dict(os.environ)

    def publish(self, channel: str, message: bytes) -> None:
        """A result: the MQTT component publishes it on MQTT (outbound ``fermyon:spin/mqtt``,
        QoS 1) unless ``adf_mqtt_response_via`` is ``redis``; the others with outbound Redis."""
        if self.kind == "mqtt":
            via = (platform().variable("adf_mqtt_response_via") or "mqtt").strip().lower()
            if via == "mqtt":
                self._publish_mqtt(channel, message)
                return
            if via != "redis":
                raise PublishUnsupported(f"adf_mqtt_response_via is {via!r}: expected 'mqtt' or 'redis'")
        address = platform().variable("adf_redis_address") or _bundled("REDIS_ADDRESS", None)
        if not address:
            raise PublishUnsupported(
                f"cannot publish to {channel!r}: set the adf_redis_address variable (outbound Redis)"
            )
        platform().redis_open(address).publish(channel, message)

    def _publish_mqtt(self, topic: str, message: bytes) -> None:
        address = platform().variable("adf_mqtt_address")
        if not address:
            raise PublishUnsupported(
                f"cannot publish to the MQTT topic {topic!r}: set the adf_mqtt_address variable "
                "(outbound MQTT, mqtt://host:port), or adf_mqtt_response_via=redis"
            )
        conn = platform().mqtt_open(address, platform().variable("adf_mqtt_username") or "",
                                    platform().variable("adf_mqtt_password") or "", MQTT_KEEP_ALIVE_SECONDS)
        conn.publish(topic, message, 1)

    def memory_bytes(self) -> int | None:
        return None


def _load_yaml(text: str) -> Any:
    # Specs mounted into a component should be JSON; YAML works when its loader is bundled.
    try:
        import yaml
    except ImportError as exc:
        raise ValueError("mounted flow specs must be JSON inside a component") from exc
    return yaml.safe_load(text)


def schedule_store() -> Any:
    """The heartbeat schedule on Spin SQLite, with the bundled cron flows registered."""
    from active_data_flow.handlers.schedule.sqlite_exec import ExecScheduleStore
    from active_data_flow.handlers.schedule.store import NotFoundError

    store = ExecScheduleStore(connectors.SpinSqliteExec(_bundled("SQLITE_DATABASE", "default")))
    specs = SpinHost("cron").specs()
    routes = _json_var("adf_routes") if isinstance(_json_var("adf_routes"), Mapping) else _bundled("ROUTES", {}).get("cron", {})
    for flow, when in dict(routes).items():
        spec = specs.get(flow)
        if spec is None:
            continue
        config = {k: v for k, v in spec.items() if k != "name"}
        interval, schedule = _cron_route(when)
        try:
            current = store.get_flow(flow)
        except NotFoundError:
            store.create_flow(flow, config, interval, description="bundled with the Spin component", schedule=schedule)
            continue
        if current.configuration != config or current.run_interval != interval or current.schedule != schedule:
            store.update_flow(flow, configuration=config, run_interval=interval, schedule=schedule)
    return store


def _cron_route(when: Any) -> tuple[int | None, dict[str, str] | None]:
    """A cron route's value as the schedule store takes it: seconds (``300``) -> ``(300, None)``,
    a calendar (``"CRON_TZ=Europe/Berlin 0 6 * * 1-5"``) -> ``(None, {"cron": …, "timezone": …})``."""
    if isinstance(when, int) or str(when).strip().isdigit():
        return int(when), None
    from active_data_flow.cron import split_schedule_text

    cron, timezone = split_schedule_text(str(when))
    return None, {"cron": cron, "timezone": timezone}


def redis_channel(routes: Mapping[str, str]) -> str:
    """The channel a Redis component serves: ``adf_channel``, else the only route's channel."""
    channel = platform().variable("adf_channel") or _bundled("REDIS_CHANNEL", None)
    if channel:
        return str(channel)
    exact = [k for k in routes if not any(c in k for c in "*?[")]
    return exact[0] if len(exact) == 1 else "adf"


#: the keep-alive the outbound MQTT connection asks for (one publish per event)
MQTT_KEEP_ALIVE_SECONDS = 30


def mqtt_response_topic(topic: str) -> str | None:
    """Where the MQTT component publishes a message's result (a message's ``reply_to`` wins):
    ``adf_mqtt_response_topic``, ``{topic}`` in it replaced by the request's topic; None (the
    default ``<topic>/results``) when the variable is not set."""
    given = platform().variable("adf_mqtt_response_topic")
    if not given:
        return None
    return str(given).replace("{topic}", topic)


def bundle_base_path() -> str:
    """The path prefix the HTTP component is mounted at (``adf_base_path``, default none)."""
    return str(platform().variable("adf_base_path") or _bundled("BASE_PATH", ""))


def max_body_bytes() -> int:
    """The largest HTTP request body this event may bring: the ``adf_max_body_bytes`` variable,
    else the component's ``ADF_MAX_BODY_BYTES`` environment variable, read by
    :func:`active_data_flow.handlers.settings.max_body_bytes` (default 6 MiB). Raises its ``SettingsError``."""
    from active_data_flow.handlers.settings import max_body_bytes as read

    given = platform().variable("adf_max_body_bytes")
    return read({"ADF_MAX_BODY_BYTES": given} if given else os.environ)


_host: dict[str, SpinHost] = {}


def host(kind: str) -> SpinHost:
    """A fresh host per event (Spin instances are per event; this keeps tests honest)."""
    begin = getattr(platform(), "begin_event", None)
    if begin is not None:
        begin()
    _host[kind] = SpinHost(kind)
    return _host[kind]


_WARM_FLOW = {
    "source": {"type": "payload"},
    "params": {"below": {"type": "integer", "default": 2}},
    "steps": [{"type": "filter", "field": "n", "op": "lt", "value": "${params.below}"}],
    "sink": {"type": "response"},
}


def warm_up() -> list[str]:
    """Answer a few events natively, once, at build time; return what failed.

    componentize-py snapshots the interpreter after this module is imported, and Spin gives
    every request a fresh copy of that snapshot. Whatever a first request builds lazily —
    compiled regular expressions, the JSON encoders, codecs, the engine's and the logger's
    first-call paths — would be built again on every request. Running HTTP requests (a
    POST, one with a parameter, a GET with one in the query, a streamed POST, an unknown flow, a
    bad body, a refused key, a body over the limit), a Redis and an MQTT message
    through the same handlers here puts all of that into the snapshot instead (measured:
    about 2.5 ms less per fresh instance). Nothing of it outlives the warm-up: the flows
    run in memory, the answers and the log lines are dropped.
    """
    import io
    import logging

    from active_data_flow.handlers.http import Request
    from active_data_flow.handlers.invoke import (
        LocalHost,
        PayloadTooLarge,
        handle_http,
        handle_message,
        refuse_http,
    )
    from active_data_flow.logs import JsonFormatter
    from active_data_flow.state import MemoryStateStore

    logger = logging.getLogger("adf")
    sink = logging.StreamHandler(io.StringIO())
    sink.setFormatter(JsonFormatter())
    saved = (logger.level, logger.propagate)
    logger.addHandler(sink)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    failed: list[str] = []
    host = LocalHost({"warm": _WARM_FLOW}, store=MemoryStateStore(), environ={}, variables={}, persist=False,
                     publisher=lambda channel, message: None)
    body = json.dumps({"records": [{"n": i} for i in range(4)]}).encode()
    with_params = json.dumps({"records": [{"n": i} for i in range(4)], "params": {"below": 3}}).encode()
    headers = {"content-type": "application/json"}
    events: list[tuple[str, Any, Any]] = [
        ("http POST", lambda: handle_http(Request("POST", "/flows/warm/run", headers, {}, body), host), 200),
        ("http POST params", lambda: handle_http(Request("POST", "/flows/warm/run", headers, {}, with_params), host),
         200),
        ("http GET", lambda: handle_http(Request("GET", "/flows/warm/run", {}, {"below": "1"}, b""), host), 200),
        ("http unknown flow", lambda: handle_http(Request("GET", "/flows/none/run", {}, {}, b""), host), 404),
        ("http bad body", lambda: handle_http(Request("POST", "/flows/warm/run", headers, {}, b"{"), host), 400),
        ("http refused key", lambda: handle_http(Request("GET", "/flows/warm/run", {}, {"sink.type": "x"}, b""),
                                                 host), 400),
        ("http too large", lambda: refuse_http(Request("POST", "/flows/warm/run", headers, {}, b""), host,
                                               PayloadTooLarge(1, 2)), 413),
        ("http stream", lambda: _drain(handle_http(Request("POST", "/flows/warm/run", headers, {"stream": "true"},
                                                           body), host)), 200),
        ("redis", lambda: handle_message(host, "redis", "warm", body, routes={"warm": "warm"}).get("status"),
         "success"),
        ("mqtt", lambda: handle_message(host, "mqtt", "warm/a", body, routes={"warm/+": "warm"}).get("status"),
         "success"),
    ]
    try:
        for name, event, expected in events:
            try:
                got = event()
                got = getattr(got, "status", got)
                if got != expected:
                    failed.append(f"{name}: answered {got!r}, expected {expected!r}")
            except Exception as exc:  # the component must still build; the build reports it
                failed.append(f"{name}: {type(exc).__name__}: {exc}")
    finally:
        logger.removeHandler(sink)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
    return failed


def _drain(answer: Any) -> Any:
    write_to = getattr(answer, "write_to", None)
    if write_to is not None:
        write_to(lambda chunk: None, max_chunk=4096)
    return answer


def start() -> None:
    """Register the Spin-native connectors and send the JSON logs to stdout (Spin's log)."""
    import logging

    from active_data_flow.logs import configure

    connectors.register()
    configure(os.environ.get("ADF_LOG_LEVEL", "INFO"), stream=sys.stdout)
    # The JSON lines carry none of what logging gathers for every record by default: not the
    # caller's file and line (a walk up the stack), nor thread, process or multiprocessing
    # names. The component is a process of its own, so these switches (the logging HOWTO's
    # "Optimization" list) touch no one else's logs; natively a small request takes ~10% less time.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


WARM_UP_FAILED = warm_up()
if WARM_UP_FAILED and sys.platform == "wasi":  # at build time: fail the build, naming what broke
    raise RuntimeError("the component's warm-up failed: " + "; ".join(WARM_UP_FAILED))
start()
# Everything alive now is in the snapshot every instance starts from: move it out of the
# cyclic collector's reach (as servers do before fork), so a collection in an instance does
# not walk — and fault in, page by page — the whole pre-initialised heap.
gc.collect()
gc.freeze()

