"""Spin 3 manifests (``spin.toml``, manifest version 2) for ActiveDataFlow flows.

Three jobs, all standard library (TOML is read with :mod:`tomllib` and written by the tiny
writer at the end of this module):

* :func:`render_manifest` — generate the manifest of a set of flows and their routes;
* :func:`check_flow_for_spin` — can a flow run *inside* a component? (the one check that
  ``adf spin manifest``, ``init``, ``validate``, ``build``, ``up`` and ``deploy`` all use);
* :func:`validate_manifest` — check a manifest: its tables, variables, triggers, component
  files, and every bundled flow.

Conventions shared with the components (``spin_app/``) and ``handlers/``
-----------------------------------------------------------------------

One component per trigger kind, all built from the same sources: ``adf-http`` runs
``<wasm_dir>/http.wasm``, ``adf-cron`` runs ``cron.wasm``, ``adf-mqtt`` runs ``mqtt.wasm``.
Spin's Redis trigger does not tell a component which channel a message came from, so each
routed Redis channel gets its own component ``adf-redis-<channel>`` (all running
``redis.wasm``) whose ``adf_channel`` variable names the channel.

Component variables (strings; JSON where noted), read with ``spin_sdk.variables.get``. The
*control* variables (:data:`CONTROL_VARIABLES`) tell the component what to run; they are not
flow configuration, so a host leaves them out of the manifest configuration layer:

========================  ==================================================================
``adf_trigger``           ``http``, ``redis``, ``cron`` or ``mqtt``
``adf_flows``             JSON ``{flow name: spec path inside the component}`` — the flows this
                          component runs (specs are mounted under ``/flows``)
``adf_routes``            JSON: for http, redis and mqtt ``{key: flow name}`` — the ``routes`` of
                          :func:`handlers.invoke.handle_message`: the Redis channel, or the MQTT
                          topic filter (``+``/``#``); for HTTP the run path
                          ``/flows/<flow>/run`` (informative: :func:`handlers.invoke.handle_http`
                          routes by path). For cron ``{flow name: interval seconds}``: the flows
                          each tick considers, due again that long after their last run
``adf_channel``           (redis) the channel this component is subscribed to
``adf_redis_address``     (redis, and components whose flows use ``spin_redis``) outbound
                          Redis: ``{{ redis_address }}``
``adf_log_level``         ``{{ log_level }}``
========================  ==================================================================

Configuration variables follow :mod:`handlers.confignames` (the *manifest* layer):
``adf_json = "{{ adf_json }}"`` (a JSON object for every flow) and, per flow,
``adf_flow_<slug>_json = "{{ adf_flow_<slug>_json }}"``; a secret attribute a flow's spec sets
(``spin_http.headers``…; not host attributes like ``address``/``url``, which
``allowed_outbound_hosts`` pins) gets a ``secret = true`` application variable
``adf_flow_<slug>_<section>_<attribute>`` defaulting to the spec's value, so a deployment can
replace it (``SPIN_VARIABLE_ADF_FLOW_FORWARD_SINK_HEADERS=…``).

Inside a component the working directory is ``/``: a ``file`` source's relative path
``data/x.csv`` reads ``/data/x.csv``, which the manifest mounts from the host.
"""

from __future__ import annotations

import ast
import json
import os
import re
import sys
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.machinery import ModuleSpec, PathFinder
from typing import Any

from core.errors import AdfError, ConfigError, SpecError
from core.registry import Registry
from core.spec import FlowSpec, load_spec_file, parse_spec
from spin_app.build import MIN_SPIN_VERSION as _BUILD_MIN_SPIN

__all__ = [
    "ALLOWED_SINKS",
    "ALLOWED_SOURCES",
    "ALLOWED_STEPS",
    "COMPONENT_VARIABLES",
    "CONTROL_VARIABLES",
    "DEFAULT_CRON_EXPRESSION",
    "DEFAULT_WASM_DIR",
    "FLOWS_MOUNT",
    "MIN_SPIN_VERSION",
    "PINNED_PLUGINS",
    "PLUGIN_RELEASE_URL",
    "RULES",
    "SPIN_MAJOR",
    "TRIGGER_KINDS",
    "TRIGGER_PLUGINS",
    "WASM_FILES",
    "ComponentRuntime",
    "Findings",
    "FlowFile",
    "ManifestOptions",
    "Mount",
    "Route",
    "ValidationReport",
    "check_flow_for_spin",
    "component_id",
    "component_runtimes",
    "cron_expression_problem",
    "flow_slug",
    "load_flow_file",
    "outbound_host_problem",
    "parse_route",
    "plan_routes",
    "render_manifest",
    "resolve_variables",
    "secret_variables",
    "slug_collisions",
    "spin_id_problem",
    "spin_registry",
    "stage_files",
    "validate_manifest",
]

TRIGGER_KINDS: tuple[str, ...] = ("http", "redis", "cron", "mqtt")
#: The one ``.wasm`` file per trigger kind that ``adf spin build`` writes.
WASM_FILES: dict[str, str] = {kind: f"{kind}.wasm" for kind in TRIGGER_KINDS}
#: Where the flow specs are mounted inside a component.
FLOWS_MOUNT = "/flows"
DEFAULT_WASM_DIR = "build/spin"
#: spin-trigger-cron (croner) expressions have 6 fields: second minute hour day-of-month month
#: day-of-week; this one ticks every 10 seconds.
DEFAULT_CRON_EXPRESSION = "*/10 * * * * *"
DEFAULT_REDIS_ADDRESS = "redis://127.0.0.1:6379"
DEFAULT_MQTT_ADDRESS = "mqtt://127.0.0.1:1883"
GENERATED_MARKER = "Generated by `adf spin manifest`"

#: Variables every ADF component has (see the module doc).
COMPONENT_VARIABLES: tuple[str, ...] = ("adf_trigger", "adf_flows", "adf_routes")
#: Variables that steer a component and are not flow configuration.
CONTROL_VARIABLES: tuple[str, ...] = (
    "adf_trigger", "adf_flows", "adf_routes", "adf_channel", "adf_response_channel", "adf_redis_address",
    "adf_base_path", "adf_log_level", "adf_mqtt_address", "adf_mqtt_username", "adf_mqtt_password",
    "adf_mqtt_response_topic", "adf_mqtt_response_via", "adf_max_body_bytes",
)

ALLOWED_SOURCES: dict[str, str] = {
    "payload": "records from the trigger (HTTP body or query, Redis message, MQTT payload)",
    "memory": "records written in the spec",
    "file": "local files mounted read-only through the manifest's files",
    "kv": "the Spin key-value store",
    "spin_sqlite": "the component's SQLite database",
    "spin_http": "outbound HTTP",
}
ALLOWED_SINKS: dict[str, str] = {
    "response": "records returned in the HTTP response",
    "memory": "an in-memory list (tests)",
    "stdout": "the component's stdout (Spin logs)",
    "kv": "the Spin key-value store",
    "spin_sqlite": "the component's SQLite database",
    "spin_redis": "outbound Redis (publish / stream append)",
    "spin_http": "outbound HTTP",
}
ALLOWED_STEPS: dict[str, str] = {
    "python": "a pure-Python function bundled into the component",
    "filter": "a field comparison or a pure-Python predicate",
}

_SPIN_NATIVE_HINT = "inside a component use " + ", ".join(sorted({*ALLOWED_SOURCES, *ALLOWED_SINKS}))
_REFUSED: dict[tuple[str, str], str] = {
    ("source", "sql"): "SQLAlchemy opens database connections (sockets) and needs C extensions; "
                       "inside a component read spin_sqlite (the component's SQLite database) or kv",
    ("sink", "sql"): "SQLAlchemy opens database connections (sockets) and needs C extensions; "
                     "inside a component write to spin_sqlite (the component's SQLite database) or kv",
    ("source", "rafka"): "redis-py opens sockets; inside a component Redis messages arrive through "
                         "the Redis trigger (source type payload)",
    ("sink", "rafka"): "redis-py opens sockets; inside a component publish with spin_redis",
    ("sink", "cache"): "the cache sink writes to Redis (sockets) or a state-store file; inside a component "
                       "use kv (the Spin key-value store)",
    ("sink", "file"): "a component cannot write files (its files are mounted read-only); write to kv, "
                      "spin_sqlite, spin_redis or spin_http, or return the records with response",
    ("step", "wasm"): "WASM steps run on the host targets (local, heartbeat, Lambda, Flink), "
                      "not inside a Spin component",
    ("step", "http"): "the http step opens sockets (urllib); inside a component fetch with a spin_http "
                      "source or post with a spin_http sink",
    ("step", "sql"): "the sql step opens database connections (sockets, SQLAlchemy); inside a component "
                     "use spin_sqlite",
}

#: Modules that cannot load (or cannot work) inside a componentize-py component, with the reason.
#: ``True`` as the second item: importing them fails, so an unguarded module-level import refuses
#: the flow; ``False``: the import works but using the module does not (a warning).
DENIED_MODULES: dict[str, tuple[str, bool]] = {
    "redis": ("redis-py opens sockets; publish with the spin_redis sink", True),
    "hiredis": ("a C extension", True),
    "rafka": ("opens sockets (Redis)", True),
    "boto3": ("the AWS SDK opens sockets; fetch objects with spin_http or mount the files", True),
    "botocore": ("the AWS SDK opens sockets", True),
    "s3fs": ("opens sockets", True),
    "sqlalchemy": ("SQLAlchemy opens database connections and needs C extensions; use spin_sqlite", True),
    "psycopg": ("a PostgreSQL driver (sockets, C extensions)", True),
    "psycopg2": ("a PostgreSQL driver (sockets, C extensions)", True),
    "asyncpg": ("a PostgreSQL driver (sockets, C extensions)", True),
    "pymysql": ("a MySQL driver (sockets)", True),
    "pydantic": ("pydantic needs pydantic-core, a compiled extension", True),
    "pydantic_core": ("a compiled extension", True),
    "orjson": ("a compiled extension", True),
    "ujson": ("a compiled extension", True),
    "msgspec": ("a compiled extension", True),
    "numpy": ("a C extension", True),
    "pandas": ("a C extension", True),
    "pyarrow": ("a C++ extension", True),
    "polars": ("a compiled extension", True),
    "scipy": ("a C extension", True),
    "duckdb": ("a C++ extension", True),
    "lxml": ("a C extension", True),
    "cryptography": ("a compiled extension", True),
    "wasmtime": ("a native library (WASM steps run on the host targets, not inside Spin)", True),
    "requests": ("opens sockets; use the spin_http connector", True),
    "urllib3": ("opens sockets; use the spin_http connector", True),
    "httpx": ("opens sockets; use the spin_http connector", True),
    "httpcore": ("opens sockets; use the spin_http connector", True),
    "aiohttp": ("opens sockets and needs C extensions; use the spin_http connector", True),
    "grpc": ("a C extension that opens sockets", True),
    "kafka": ("a Kafka client (sockets)", True),
    "confluent_kafka": ("a Kafka client (C extension, sockets)", True),
    "paho": ("an MQTT client (sockets); MQTT messages arrive through the MQTT trigger", True),
    "pika": ("an AMQP client (sockets)", True),
    "pyflink": ("runs on the JVM (the Flink target)", True),
    "pyiceberg": ("needs pyarrow and sockets", True),
    "ssl": ("not available in the WASI build of Python", True),
    "ctypes": ("native libraries cannot be loaded inside a component", True),
    "socket": ("a component has no sockets; use spin_http / spin_redis", False),
    "subprocess": ("a component cannot start processes", False),
    "multiprocessing": ("a component cannot start processes", False),
}
_OWN_PACKAGES = {"core", "handlers", "spin_app"}
_GLOB_CHARS = re.compile(r"[*?\[]")
_TEMPLATE_RE = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
_APP_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


# --------------------------------------------------------------------------- Spin 3 rules
#
# What Spin 3 and the pinned trigger plugins accept, as the checker of every manifest
# (``adf spin manifest``, ``init`` and ``validate`` all run :func:`validate_manifest`). Each
# refusal names its rule (:data:`RULES`) so a reader can find where it comes from.

#: The oldest Spin the components run on, as a version tuple: :data:`spin_app.build.MIN_SPIN_VERSION`
#: (the components import ``spin:postgres@4.0.0``, first in Spin 3.4; ``tests/test_spin_imports.py``
#: checks every built component's imports against it).
MIN_SPIN_VERSION: tuple[int, int, int] = tuple(  # type: ignore[assignment]
    int(p) for p in (_BUILD_MIN_SPIN + ".0.0").split(".")[:3])
#: The Spin major version the manifests and the pinned plugins are made for.
SPIN_MAJOR = 3
#: Trigger plugins by trigger kind (HTTP and Redis are built into Spin).
TRIGGER_PLUGINS: dict[str, str] = {"cron": "trigger-cron", "mqtt": "trigger-mqtt"}
#: The plugin releases the checker's trigger rules come from: the last ones built for Spin 3
#: (the plugin index also offers later releases built for Spin 4 as "compatible").
PINNED_PLUGINS: dict[str, str] = {"trigger-cron": "0.5.0", "trigger-mqtt": "0.8.0"}
#: The plugin index's manifest of one release (spinframework/spin-plugins, manifests/<name>/<name>@<version>.json):
#: trigger-cron 0.5.0 and trigger-mqtt 0.8.0 are the last releases built from the plugins' own
#: repositories for Spin 3; 0.6.x / 0.9.x come from spin-trigger-plugins, built for Spin 4.
PLUGIN_RELEASE_URL = "https://raw.githubusercontent.com/spinframework/spin-plugins/main/manifests/{name}/{name}@{version}.json"

RULES: dict[str, str] = {
    "id": "Spin 3.0-3.4 identifiers (spin-serde id.rs): words start with an ASCII letter",
    "keys": "Spin 3.4 manifest v2 schema (unknown keys are refused)",
    "files": "Spin 3 files: inside the application directory",
    "hosts": "Spin 3 allowed_outbound_hosts: scheme://host[:port]",
    "variables": "Spin 3 variables: default or required = true, not both",
    "labels": "Spin 3 key_value_stores / sqlite_databases labels: kebab-case or snake_case",
    "cron": f"spin-trigger-cron {PINNED_PLUGINS['trigger-cron']} (tokio-cron-scheduler/croner: 6 fields)",
    "mqtt": f"spin-trigger-mqtt {PINNED_PLUGINS['trigger-mqtt']} (trigger fields, all strings)",
    "redis": "Spin 3 Redis trigger",
    "http": "Spin 3 HTTP trigger",
}


def _rule(key: str) -> str:
    return f" [rule: {RULES[key]}]"


def spin_id_problem(value: str, delim: str, *, lower: bool) -> str | None:
    """Why ``value`` is not a Spin 3 identifier, or None.

    ``delim`` ``"-"``: a kebab-case id (component ids); ``"_"``: snake case (variable names).
    The strictest rule across the supported Spin 3 releases: every ``delim``-separated word
    starts with an ASCII letter and holds only ASCII letters and digits, all lower case (or,
    unless ``lower``, all upper case). Later releases also accept words starting with a digit
    after the first one (``orders-2024``) and ``:`` inside words; Spin 3.4 does not.
    """
    if not value:
        return "must not be empty"
    wrong = "_" if delim == "-" else "-"
    if wrong in value:
        return f"words must be separated with {delim!r}, not {wrong!r}"
    for word in value.split(delim):
        if not word:
            return f"{delim!r}-separated words must not be empty"
        if not ("a" <= word[0].lower() <= "z"):
            return f"each {delim!r}-separated word must start with an ASCII letter, got {word!r}"
        if not all(c.isascii() and c.isalnum() for c in word):
            return f"words may contain only ASCII letters and digits, got {word!r}"
        letters = [c for c in word if c.isalpha()]
        if not (all(c.islower() for c in letters) or (not lower and all(c.isupper() for c in letters))):
            return (f"words must be all lower case{'' if lower else ' or all UPPER case'}, got {word!r}")
    return None


def _id_words(text: str) -> list[str]:
    """Identifier words of any text: lower-cased runs of ``a-z0-9`` (other characters, including
    non-ASCII letters, separate words); a word starting with a digit gets an ``n`` in front."""
    words = [w for w in re.split(r"[^a-z0-9]+", text.lower()) if w]
    return [("n" + w if w[0].isdigit() else w) for w in words]


def flow_slug(name: str) -> str:
    """A flow name as it appears in variable names: :func:`handlers.confignames.flow_slug`
    (the components read their variables with it), always a valid Spin 3 snake-case word list.
    Two flows of one app with the same slug are refused (:func:`slug_collisions`)."""
    from handlers.confignames import flow_slug as slug

    return slug(name)


def slug_collisions(names: Iterable[str]) -> list[str]:
    """One message per identifier that two or more flow names map to."""
    by_slug: dict[str, list[str]] = {}
    for name in names:
        if name not in by_slug.setdefault(flow_slug(name), []):
            by_slug[flow_slug(name)].append(name)
    return [
        f"flows {' and '.join(repr(n) for n in sorted(names_))} map to the same identifier {slug!r} "
        f"(variable adf_flow_{slug}_json); rename one{_rule('id')}"
        for slug, names_ in by_slug.items() if len(names_) > 1
    ]


_CRON_FIELDS: tuple[tuple[str, int, int, tuple[str, ...]], ...] = (
    ("second", 0, 59, ()),
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day-of-month", 1, 31, ()),
    ("month", 1, 12, ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")),
    ("day-of-week", 0, 7, ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")),
)


def _cron_value(text: str, low: int, high: int, names: tuple[str, ...]) -> int | None:
    if text.isdigit():
        n = int(text)
        return n if low <= n <= high else None
    upper = text.upper()
    if upper in names:
        return names.index(upper) + (1 if low == 1 else 0)
    return None


def _cron_field_problem(index: int, field_: str) -> str | None:
    name, low, high, names = _CRON_FIELDS[index]
    for part in field_.split(","):
        if part in ("*",) or (part == "?" and name in ("day-of-month", "day-of-week")):
            continue
        base, slash, step = part.partition("/")
        if slash and (not step.isdigit() or int(step) == 0 or int(step) > high):
            return f"{name} {part!r}: the step after '/' must be a number from 1 to {high}"
        if name == "day-of-month" and not slash and (base == "L" or (base.endswith("W") and base[:-1].isdigit()
                                                                      and _cron_value(base[:-1], low, high, names))):
            continue
        if name == "day-of-week" and not slash:
            if base.endswith("L") and _cron_value(base[:-1], low, high, names) is not None:
                continue
            day, hash_, nth = base.partition("#")
            if hash_ and _cron_value(day, low, high, names) is not None and nth in ("1", "2", "3", "4", "5"):
                continue
        if base == "*" and slash:
            continue
        first, dash, last = base.partition("-")
        a = _cron_value(first, low, high, names)
        b = _cron_value(last, low, high, names) if dash else a
        allowed = f"{low}-{high}" + (f" or {names[0]}-{names[-1]}" if names else "")
        if a is None or b is None:
            return f"{name} {part!r}: values must be {allowed}"
        if a > b:
            return f"{name} {part!r}: the range runs backwards"
    return None


def cron_expression_problem(expr: str) -> str | None:
    """Why the pinned spin-trigger-cron refuses ``expr`` at start-up, or None.

    Six fields: second minute hour day-of-month month day-of-week (0-7, 0 and 7 are Sunday, or
    SUN-SAT), each ``*``, a value, a range ``a-b``, a step ``*/n`` / ``a-b/n`` or a list of them;
    ``?`` in the day fields, ``L``/``nW`` in day-of-month, ``nL``/``n#k`` in day-of-week. No year
    field: croner refuses a seventh field.
    """
    fields_ = expr.split()
    if len(fields_) != 6:
        return (f"cron_expression {expr!r} has {len(fields_)} field(s); spin-trigger-cron needs 6 "
                f"(second minute hour day-of-month month day-of-week), e.g. {DEFAULT_CRON_EXPRESSION!r}")
    for i, f in enumerate(fields_):
        problem = _cron_field_problem(i, f)
        if problem:
            return f"cron_expression {expr!r}: {problem}"
    return None


_HOST_PART = r"(\*|\*\.[A-Za-z0-9.-]+|[A-Za-z0-9][A-Za-z0-9.-]*|\[[0-9A-Fa-f:]+\]|\d+\.\d+\.\d+\.\d+/\d+)"
_OUTBOUND_RE = re.compile(r"^(\*|[a-z][a-z0-9+.-]*)://" + _HOST_PART + r"(:(\*|\d+|\d+\.\.\d+))?/?$")


def outbound_host_problem(host: str) -> str | None:
    """Why Spin 3 refuses an ``allowed_outbound_hosts`` entry, or None (``{{ variable }}``
    entries are checked after their variables are resolved, by Spin)."""
    if "{{" in host:
        return None
    if not _OUTBOUND_RE.match(host):
        return f"{host!r} must be scheme://host[:port] (e.g. redis://cache:6379, https://*.example.com)"
    m = re.search(r":(\d+)(?:\.\.(\d+))?/?$", host)
    if m and any(int(p) > 65535 for p in m.groups() if p):
        return f"{host!r}: port out of range"
    return None


def _label_problem(label: str) -> str | None:
    kebab = spin_id_problem(label, "-", lower=False)
    snake = spin_id_problem(label, "_", lower=False)
    if kebab is None or snake is None:
        return None
    return f"label {label!r} must be kebab-case or snake_case ({kebab})"


#: Keys Spin 3.4 accepts, per table.
_TOP_KEYS = frozenset({"spin_manifest_version", "application", "variables", "trigger", "component"})
_APPLICATION_KEYS = frozenset({"name", "version", "description", "authors", "targets", "trigger", "tool"})
_VARIABLE_KEYS = frozenset({"default", "required", "secret", "description"})
_COMPONENT_KEYS = frozenset({
    "source", "description", "variables", "environment", "files", "exclude_files", "allowed_http_hosts",
    "allowed_outbound_hosts", "key_value_stores", "sqlite_databases", "ai_models", "build", "tool",
    "dependencies_inherit_configuration", "dependencies",
})
_BUILD_KEYS = frozenset({"command", "workdir", "watch"})
#: ``[[trigger.<kind>]]`` keys: Spin's own (id, component, components) plus the trigger's.
_TRIGGER_KEYS: dict[str, frozenset[str]] = {
    "http": frozenset({"id", "component", "components", "route", "executor", "static_response"}),
    "redis": frozenset({"id", "component", "components", "channel", "address"}),
    "cron": frozenset({"id", "component", "cron_expression"}),
    "mqtt": frozenset({"id", "component", "topic", "qos"}),
}
#: ``[application.trigger.<kind>]`` keys; for mqtt every one is required.
_APP_TRIGGER_KEYS: dict[str, frozenset[str]] = {
    "redis": frozenset({"address"}),
    "mqtt": frozenset({"address", "username", "password", "keep_alive_interval"}),
    "cron": frozenset(),
    "http": frozenset(),
}
_TRIGGER_RULE = {"http": "http", "redis": "redis", "cron": "cron", "mqtt": "mqtt"}


def _unknown_keys(table: Mapping[str, Any], allowed: Iterable[str]) -> list[str]:
    return sorted(str(k) for k in table if k not in set(allowed))


def _file_source_problem(source: str, base: str, *, pattern: bool) -> str | None:
    """Why a ``files`` source breaks the rule that mounted files lie inside the app directory."""
    posix = source.replace(os.sep, "/")
    if os.path.isabs(source) or posix.startswith("/") or re.match(r"^[A-Za-z]:[\\/]", source):
        return f"source {source!r} is an absolute path; give it relative to the manifest, inside the app directory"
    if ".." in posix.split("/"):
        return (f"source {source!r} is outside the application directory ('..'); copy the files into the app "
                "(`adf spin init` does) and mount them from there")
    if not pattern and not os.path.exists(os.path.join(base, source)):
        return f"source {source} does not exist (relative to the manifest: {os.path.join(base, source)})"
    return None


# --------------------------------------------------------------------------- flows


@dataclass
class FlowFile:
    """A flow spec file: its host path (absolute), raw mapping and parsed spec."""

    path: str
    raw: dict[str, Any]
    spec: FlowSpec

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def mount_destination(self) -> str:
        """Where the spec is mounted inside a component: ``/flows/<name><ext>``."""
        ext = os.path.splitext(self.path)[1] or ".yaml"
        return f"{FLOWS_MOUNT}/{self.name}{ext}"


def load_flow_file(path: str) -> FlowFile:
    """Read and parse a spec file; :class:`SpecError` lists every problem.

    Connectors are not built here (``check_components=False``): the Spin-native types may not
    be importable on the host; :func:`check_flow_for_spin` checks types and attributes.
    """
    abspath = os.path.abspath(path)
    raw = load_spec_file(abspath)
    try:
        spec = parse_spec(raw, check_components=False)
    except SpecError as exc:
        raise SpecError(exc.problems, where=f"flow spec {path}") from exc
    return FlowFile(path=abspath, raw=raw, spec=spec)


@dataclass(frozen=True)
class Mount:
    """One ``files`` entry: host ``source`` (relative to the manifest) at ``destination``."""

    source: str
    destination: str

    def covers(self, inside_path: str) -> bool:
        """Whether the in-component path (or glob prefix) lies under this mount."""
        d = self.destination.rstrip("/") or "/"
        return d == "/" or inside_path == d or inside_path.startswith(d + "/")


@dataclass
class Findings:
    """Problems that refuse a flow (``errors``) and ones that only warn (``warnings``)."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def extend(self, other: Findings) -> None:
        for msg in other.errors:
            if msg not in self.errors:
                self.errors.append(msg)
        for msg in other.warnings:
            if msg not in self.warnings:
                self.warnings.append(msg)


def _glob_prefix(path: str) -> str:
    """The part of a path before its first glob character, cut at a directory boundary."""
    parts = path.split("/")
    kept: list[str] = []
    for i, part in enumerate(parts):
        if _GLOB_CHARS.search(part):
            break
        kept.append(part)
        if i == len(parts) - 1:
            return path
    return "/".join(kept) or ("/" if path.startswith("/") else ".")


def _inside_path(path: str) -> str:
    """The in-component absolute path of a spec path (the component's working directory is ``/``)."""
    p = path.replace(os.sep, "/")
    if p.startswith("./"):
        p = p[2:]
    return os.path.normpath(p if p.startswith("/") else "/" + p).replace(os.sep, "/")


def _file_source_paths(spec: FlowSpec) -> list[str]:
    raw = spec.source.get("path")
    if isinstance(raw, str):
        return [raw]
    if isinstance(raw, list):
        return [p for p in raw if isinstance(p, str)]
    return []


def data_mounts(flow: FlowFile, manifest_dir: str, base_dir: str | None = None) -> list[Mount]:
    """Mounts for the local files a flow's ``file`` source reads.

    A relative spec path is resolved against ``base_dir`` (default: the current directory,
    as ``adf run`` does) on the host and mounted at ``/<path>`` inside the component.
    """
    if flow.spec.source.get("type") != "file":
        return []
    base = os.path.abspath(base_dir or os.getcwd())
    out: list[Mount] = []
    for path in _file_source_paths(flow.spec):
        if "://" in path:
            continue  # refused by check_flow_for_spin
        prefix = _glob_prefix(path)
        host = prefix if os.path.isabs(prefix) else os.path.join(base, prefix)
        source = os.path.relpath(os.path.abspath(host), manifest_dir).replace(os.sep, "/")
        out.append(Mount(source=source, destination=_inside_path(prefix)))
    return out


def _connector_sections(spec: FlowSpec) -> list[tuple[str, str, dict[str, Any]]]:
    """(where, kind, config) of the flow's source, sink and dead-letter sink."""
    out = [("source", "source", spec.source), ("sink", "sink", spec.sink)]
    if spec.dead_letter:
        out.append(("dead_letter", "sink", spec.dead_letter))
    return out


def outbound_hosts(flow: FlowFile) -> tuple[list[str], bool]:
    """``allowed_outbound_hosts`` a flow needs, and whether it needs the ``redis_address`` variable.

    ``spin_redis`` with ``address``/``url`` ``redis://host:port`` gives ``redis://host:port``;
    without one the component uses ``adf_redis_address``. ``spin_http`` with ``url`` gives
    ``scheme://host[:port]``.
    """
    hosts: list[str] = []
    needs_redis_variable = False
    for _where, _kind, cfg in _connector_sections(flow.spec):
        t = cfg.get("type")
        if t not in ("spin_redis", "spin_http"):
            continue
        url = next((cfg[k] for k in ("address", "url", "endpoint") if isinstance(cfg.get(k), str)), None)
        if t == "spin_redis" and not url:
            needs_redis_variable = True
            continue
        host = _host_of(str(url)) if url else None
        if host and host not in hosts:
            hosts.append(host)
    return hosts, needs_redis_variable


def _host_of(url: str) -> str | None:
    m = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://(?:[^@/]*@)?([^/?#]+)", url)
    if not m:
        return None
    scheme, netloc = m.group(1).lower(), m.group(2)
    if scheme in ("redis", "rediss") and ":" not in netloc.rsplit("]", 1)[-1]:
        netloc += ":6379"
    return f"{scheme}://{netloc}"


# --------------------------------------------------------------------------- can it run inside Spin?


def check_flow_for_spin(
    flow: FlowFile, *, mounts: Sequence[Mount] | None = None, reg: Registry | None = None,
    component: str | None = None,
) -> Findings:
    """Whether every connector and step of ``flow`` can run inside a Spin component.

    ``mounts`` are the component's ``files``; when given, a ``file`` source's paths must lie
    under one of them. Each message names the flow, the connector or step, and the reason.
    """
    reg = reg or spin_registry()
    found = Findings()
    spec = flow.spec
    at = f"flow {spec.name}"
    for where, kind, cfg in _connector_sections(spec):
        type_name = str(cfg.get("type") or "")
        label = f"{at}: {where} {type_name!r}"
        allowed = ALLOWED_SOURCES if kind == "source" else ALLOWED_SINKS
        if type_name not in allowed:
            reason = _REFUSED.get((kind, type_name)) or (
                f"type {type_name!r} is not known to run inside a Spin component "
                f"(allowed {kind}s: {', '.join(allowed)})"
            )
            found.errors.append(f"{label}: {reason}")
            continue
        _check_attributes(kind, type_name, cfg, label, reg, found)
        if kind == "source" and type_name == "file":
            _check_file_source(spec, label, mounts, component, found)
    scanned: set[str] = set()
    for i, step in enumerate(spec.steps):
        _check_step(flow, i, step, found, scanned)
    parallelism = spec.runtime.get("parallelism", 1)
    if isinstance(parallelism, int) and parallelism > 1:
        found.warnings.append(
            f"{at}: runtime.parallelism {parallelism}: a component has no processes; "
            "the flow runs with parallelism 1 inside Spin"
        )
    runtime_type = spec.runtime.get("type", "local")
    if runtime_type != "local":
        found.warnings.append(
            f"{at}: runtime.type {runtime_type!r} is ignored inside a component (the engine runs in-process)"
        )
    if spec.state:
        found.warnings.append(
            f"{at}: state {spec.state!r} is not opened inside a component; "
            "checkpoints and state live in the Spin key-value store / SQLite"
        )
    return found


def _check_attributes(kind: str, type_name: str, cfg: Mapping[str, Any], label: str,
                      reg: Registry, found: Findings) -> None:
    try:
        cls = reg.resolve(kind, type_name)
    except (AdfError, ImportError) as exc:
        found.warnings.append(f"{label}: attributes not checked: the type is not installed here ({exc})")
        return
    try:
        cls({k: v for k, v in cfg.items() if k != "type"})
    except ConfigError as exc:
        found.errors.extend(f"{label}: {p}" for p in exc.problems)
    except Exception as exc:
        found.errors.append(f"{label}: {type(exc).__name__}: {exc}")


def _check_file_source(spec: FlowSpec, label: str, mounts: Sequence[Mount] | None,
                       component: str | None, found: Findings) -> None:
    if spec.source.get("watch"):
        found.errors.append(
            f"{label}: watch: true never finishes, and a component serves one event at a time; "
            "run watching file flows on the local or heartbeat target"
        )
    for path in _file_source_paths(spec):
        if "://" in path:
            scheme = path.split("://", 1)[0]
            reason = ("S3 needs boto3 (sockets); mount the files through the manifest's files, "
                      "or fetch them with spin_http") if scheme in ("s3", "s3a") else \
                f"{scheme}:// paths need network clients; only local files mounted through the manifest work"
            found.errors.append(f"{label}: path {path!r}: {reason}")
            continue
        if mounts is None:
            continue
        inside = _inside_path(_glob_prefix(path))
        if not any(m.covers(inside) for m in mounts):
            where = f" of component {component}" if component else ""
            found.errors.append(
                f"{label}: path {path!r} is read at {inside} inside the component, but no files entry{where} "
                f"mounts it; add {{ source = \"<host dir>\", destination = \"{inside}\" }} "
                "(adf spin manifest does this)"
            )


def _check_step(flow: FlowFile, index: int, step: Mapping[str, Any], found: Findings, scanned: set[str]) -> None:
    type_name = str(step.get("type") or "python")
    label = f"flow {flow.name}: steps[{index}] {type_name!r}"
    if type_name not in ALLOWED_STEPS:
        reason = _REFUSED.get(("step", type_name)) or (
            f"step type {type_name!r} is not known to run inside a Spin component "
            f"(allowed steps: {', '.join(ALLOWED_STEPS)})"
        )
        found.errors.append(f"{label}: {reason}")
        return
    function = step.get("function")
    if function is None:
        if type_name == "python":
            found.errors.append(f"{label}: 'function' is required ('module:function')")
        return
    if not isinstance(function, str) or ":" not in function:
        found.errors.append(f"{label}: 'function' must be 'module:function', got {function!r}")
        return
    module, _, attr = function.partition(":")
    label = f"{label} ({function})"
    top = module.split(".")[0]
    if top in DENIED_MODULES:
        found.errors.append(f"{label}: module {module}: {DENIED_MODULES[top][0]}")
        return
    if top in sys.stdlib_module_names or top in _OWN_PACKAGES:
        return  # bundled with the component's Python
    search = _search_path(flow)
    spec = _find_module(module, search)
    if spec is None or (spec.origin is None and not spec.submodule_search_locations):
        found.errors.append(
            f"{label}: module {module!r} not found next to the spec, in python_path or installed; "
            "the component bundles only modules the build can find"
        )
        return
    _scan_module(module, spec, search, label, found, seen=scanned, entry_attr=attr.split(".")[0])


def _search_path(flow: FlowFile) -> list[str]:
    """Where step modules import from: the spec's directory, python_path, the working directory, sys.path."""
    paths = [os.path.dirname(flow.path)]
    paths += [os.path.abspath(p) for p in (flow.raw.get("python_path") or []) if isinstance(p, str)]
    paths.append(os.getcwd())
    paths += [p for p in sys.path if p]
    out: list[str] = []
    for p in paths:
        if p not in out:
            out.append(p)
    return out


def _find_module(name: str, search: list[str]) -> ModuleSpec | None:
    """Locate a module without importing it (nor its parent packages)."""
    parts = name.split(".")
    try:
        spec = PathFinder.find_spec(parts[0], search)
        for i in range(1, len(parts)):
            if spec is None or not spec.submodule_search_locations:
                return None
            spec = PathFinder.find_spec(".".join(parts[: i + 1]), list(spec.submodule_search_locations))
    except (ImportError, ValueError):
        return None
    return spec


def _is_installed_package(path: str) -> bool:
    parts = path.replace(os.sep, "/").split("/")
    return "site-packages" in parts or "dist-packages" in parts


def _compiled_files(spec: ModuleSpec) -> list[str]:
    roots = list(spec.submodule_search_locations or [])
    out: list[str] = []
    for root in roots:
        for dirpath, _dirs, files in os.walk(root):
            out.extend(os.path.join(dirpath, f) for f in files if f.endswith((".so", ".pyd")))
            if len(out) > 3:
                return out
    return out


@dataclass
class _Import:
    module: str
    line: int
    guarded: bool  # inside try/except ImportError
    in_function: bool


class _ImportCollector(ast.NodeVisitor):
    def __init__(self, package: str | None) -> None:
        self.package = package
        self.imports: list[_Import] = []
        self.names: set[str] = set()
        self.star = False
        self._guard = 0
        self._func = 0

    def _add(self, module: str, node: ast.stmt) -> None:
        self.imports.append(_Import(module, node.lineno, self._guard > 0, self._func > 0))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node)
            if not self._func:
                self.names.add((alias.asname or alias.name).split(".")[0])

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            if not self.package:
                return
            base = self.package.split(".")
            base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
            module = ".".join([*base, node.module] if node.module else base)
            if not node.module:  # from . import x: x may be a submodule
                for alias in node.names:
                    self._add(f"{module}.{alias.name}", node)
            else:
                self._add(module, node)
        elif node.module:
            self._add(node.module, node)
        if not self._func:
            for alias in node.names:
                if alias.name == "*":
                    self.star = True
                self.names.add(alias.asname or alias.name)

    def visit_Try(self, node: ast.Try) -> None:
        guards = any(_catches_import_error(h.type) for h in node.handlers)
        self._guard += guards
        for stmt in node.body:
            self.visit(stmt)
        self._guard -= guards
        for part in (*node.handlers, *node.orelse, *node.finalbody):
            self.visit(part)

    visit_TryStar = visit_Try  # type: ignore[assignment]

    def _visit_function(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> None:
        if not self._func and not isinstance(node, ast.Lambda):
            self.names.add(node.name)
        self._func += 1
        self.generic_visit(node)
        self._func -= 1

    visit_FunctionDef = _visit_function
    visit_AsyncFunctionDef = _visit_function

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        if not self._func:
            self.names.add(node.name)
        self.generic_visit(node)

    def visit_Assign(self, node: ast.Assign) -> None:
        if not self._func:
            for target in node.targets:
                if isinstance(target, ast.Name):
                    self.names.add(target.id)
        self.generic_visit(node)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if not self._func and isinstance(node.target, ast.Name):
            self.names.add(node.target.id)
        self.generic_visit(node)


def _catches_import_error(node: ast.expr | None) -> bool:
    if node is None:
        return True
    names = [node] if not isinstance(node, ast.Tuple) else list(node.elts)
    return any(isinstance(n, ast.Name) and n.id in ("ImportError", "ModuleNotFoundError", "Exception",
                                                      "BaseException") for n in names)


def _scan_module(name: str, spec: ModuleSpec, search: list[str], label: str, found: Findings,  # noqa: C901
                 seen: set[str], entry_attr: str | None = None, via: str = "") -> None:
    """Refuse compiled modules and imports of modules that cannot load in a component (recursively
    through the project's own modules; installed packages are checked, not read)."""
    if name in seen and not entry_attr:
        return
    repeated = name in seen  # another step of the flow uses it: only the entry point is new
    seen.add(name)
    origin = spec.origin or ""
    if origin.endswith((".so", ".pyd")):
        found.errors.append(f"{label}: module {name} is a compiled extension ({os.path.basename(origin)}); "
                            "componentize-py can bundle only pure Python")
        return
    if _is_installed_package(origin or next(iter(spec.submodule_search_locations or []), "")):
        compiled = _compiled_files(spec) if spec.submodule_search_locations else []
        if compiled:
            found.warnings.append(
                f"{label}: installed package {name.split('.')[0]} contains compiled extension modules "
                f"({', '.join(os.path.basename(c) for c in compiled[:3])}); the import fails inside a "
                "component unless the package falls back to pure Python"
            )
        return
    if not origin.endswith(".py"):
        return  # namespace package: nothing to read
    try:
        with open(origin, encoding="utf-8") as f:
            tree = ast.parse(f.read(), filename=origin)
    except (OSError, SyntaxError, UnicodeDecodeError) as exc:
        found.errors.append(f"{label}: cannot read module {name} ({origin}): {exc}")
        return
    is_package = os.path.basename(origin) == "__init__.py"
    collector = _ImportCollector(name if is_package else name.rpartition(".")[0] or None)
    collector.visit(tree)
    if entry_attr and entry_attr not in collector.names and not collector.star:
        found.errors.append(f"{label}: module {name} defines no {entry_attr!r}")
    if repeated:
        return
    for imp in collector.imports:
        top = imp.module.split(".")[0]
        if top in _OWN_PACKAGES:
            continue
        where = f"module {name}{via} imports {imp.module} (line {imp.line})"
        denied = DENIED_MODULES.get(top)
        if denied:
            reason, fails_on_import = denied
            if fails_on_import and not imp.guarded and not imp.in_function:
                found.errors.append(f"{label}: {where}: {reason}")
            else:
                context = ("inside a try/except ImportError" if imp.guarded else
                           "inside a function" if imp.in_function else "")
                found.warnings.append(f"{label}: {where}{' ' + context if context else ''}: {reason}")
            continue
        if top in sys.stdlib_module_names:
            continue
        sub = _find_module(imp.module, search) or (
            _find_module(imp.module.rpartition(".")[0], search) if "." in imp.module else None)
        if sub is None:
            if not imp.guarded:
                msg = f"{label}: {where}: module not found (the build cannot bundle it)"
                (found.warnings if imp.in_function else found.errors).append(msg)
            continue
        _scan_module(sub.name, sub, search, label, found, seen, via=f" (imported by {name})")


# --------------------------------------------------------------------------- routes


@dataclass(frozen=True)
class Route:
    """A trigger routed to a flow. ``key`` is None for the default route of the kind."""

    kind: str
    key: str | None
    flow: str


def parse_route(text: str) -> Route:
    """``KIND[:PATTERN]=FLOW``: ``redis:orders=publish``, ``mqtt:sensors/+/temp=readings``,
    ``cron:300=snapshot`` (due every 300 s), ``http=enrich``, or ``KIND=FLOW`` for the default."""
    left, sep, flow = text.rpartition("=")
    if not sep or not left or not flow.strip():
        raise ValueError(f"route {text!r}: expected KIND[:PATTERN]=FLOW (e.g. redis:orders=my_flow)")
    kind, colon, key = left.partition(":")
    kind = kind.strip().lower()
    if kind not in TRIGGER_KINDS:
        raise ValueError(f"route {text!r}: unknown trigger {kind!r} (one of: {', '.join(TRIGGER_KINDS)})")
    key = key.strip()
    if colon and not key:
        raise ValueError(f"route {text!r}: empty pattern after '{kind}:'")
    if kind == "http" and key:
        raise ValueError(
            f"route {text!r}: HTTP paths are fixed — GET|POST /flows/<flow>/run runs each flow routed to "
            f"http (GET /flows lists them); use --route http={flow.strip()}"
        )
    problem = _route_key_problem(kind, key) if key else None
    if problem:
        raise ValueError(f"route {text!r}: {problem}")
    return Route(kind, key or None, flow.strip())


def _route_key_problem(kind: str, key: str) -> str | None:
    if kind == "http":
        return _http_route_problem(key)
    if kind == "cron":
        return None if key.isdigit() and int(key) > 0 else (
            f"a cron route's pattern is the interval in seconds after which the flow is due again (got {key!r}); "
            "the cron trigger ticks with --cron-expression and runs the flows that are due")
    if kind == "mqtt":
        return _mqtt_topic_problem(key)
    if kind == "redis" and (not key.strip() or any(c.isspace() for c in key)):
        return f"redis channel {key!r} must be a non-empty name without whitespace"
    return None


def _http_route_problem(route: str) -> str | None:
    if not route.startswith("/"):
        return f"HTTP route {route!r} must start with '/'"
    segments = route.strip("/").split("/") if route.strip("/") else []
    for i, seg in enumerate(segments):
        if not seg:
            return f"HTTP route {route!r} has an empty segment"
        if "..." in seg and (seg != "..." or i != len(segments) - 1):
            return f"HTTP route {route!r}: the '...' wildcard must be the whole last segment"
        if seg.startswith(":") and len(seg) == 1:
            return f"HTTP route {route!r}: a ':' parameter needs a name"
        if any(c.isspace() or c in "?#" for c in seg):
            return f"HTTP route {route!r} contains whitespace, '?' or '#'"
    return None


def _mqtt_topic_problem(topic: str) -> str | None:
    if not topic:
        return "MQTT topic must not be empty"
    levels = topic.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            return f"MQTT topic {topic!r}: '#' must be the whole last level"
        if "+" in level and level != "+":
            return f"MQTT topic {topic!r}: '+' must be a whole level"
    return None


#: The Spin route of the HTTP component: handlers.invoke.handle_http serves GET /flows,
#: GET /flows/<name> and GET|POST /flows/<name>/run under it.
HTTP_TRIGGER_ROUTE = "/flows/..."


def http_run_path(flow: str) -> str:
    return f"/flows/{flow}/run"


def default_route_key(kind: str, flow: FlowFile) -> str:
    """The route a flow gets for ``kind`` when none is given: ``/flows/<flow>/run``, Redis
    channel ``<flow>``, MQTT topic ``adf/<flow>``, cron every ``runtime.interval_seconds``."""
    if kind == "http":
        return http_run_path(flow.name)
    if kind == "redis":
        return flow.name
    if kind == "mqtt":
        return f"adf/{flow.name}"
    interval = flow.spec.runtime.get("interval_seconds")
    if not interval:
        raise ValueError(
            f"flow {flow.name} has no runtime.interval_seconds: give its cron interval with "
            f"--route cron:SECONDS={flow.name}"
        )
    return str(interval)


def plan_routes(flows: Sequence[FlowFile], triggers: Sequence[str], routes: Sequence[Route]
                ) -> dict[str, dict[str, str]]:
    """Routes by trigger kind from explicit routes plus defaults:
    ``{"http": {"/flows/f/run": "f"}, "redis": {channel: flow}, "mqtt": {topic: flow},
    "cron": {flow: "<seconds>"}}`` (cron is keyed by flow: each flow has one interval).

    A flow without any ``--route`` gets the default route of every kind in ``triggers``
    (``http`` when neither routes nor triggers are given). A channel or topic runs one flow.
    Raises ``ValueError`` listing every problem.
    """
    names = {f.name: f for f in flows}
    problems: list[str] = []
    plan: dict[str, dict[str, str]] = {}

    def add(kind: str, key: str, flow: str) -> None:
        table = plan.setdefault(kind, {})
        if kind == "cron":
            key, flow = flow, key  # flow -> interval
        if table.get(key, flow) != flow:
            what = {"cron": f"flow {key} gets two cron intervals", "redis": f"redis channel {key!r} routes to two flows",
                    "mqtt": f"mqtt topic {key!r} routes to two flows"}.get(kind, f"{kind} {key!r} routes twice")
            problems.append(f"{what}: {table[key]} and {flow} (one each)")
            return
        table[key] = flow

    routed: set[str] = set()
    for r in routes:
        if r.flow not in names:
            problems.append(f"route {r.kind}{':' + r.key if r.key else ''}={r.flow}: no flow named {r.flow!r} "
                            f"(flows: {', '.join(names)})")
            continue
        routed.add(r.flow)
        try:
            add(r.kind, r.key or default_route_key(r.kind, names[r.flow]), r.flow)
        except ValueError as exc:
            problems.append(str(exc))
    kinds = list(dict.fromkeys(triggers)) or ([] if routes else ["http"])
    for f in flows:
        if f.name in routed:
            continue
        for kind in kinds:
            try:
                add(kind, default_route_key(kind, f), f.name)
            except ValueError as exc:
                problems.append(str(exc))
    for kind in kinds:
        if kind not in plan and not problems:
            problems.append(f"--trigger {kind}: no flow is routed to it (every flow has explicit --route options); "
                            f"add --route {kind}=FLOW")
    if problems:
        raise ValueError("; ".join(problems))
    return {k: plan[k] for k in TRIGGER_KINDS if k in plan}


def component_id(kind: str, key: str | None = None, taken: Iterable[str] = ()) -> str:
    """``adf-http``, ``adf-cron``, ``adf-mqtt``; ``adf-redis-<channel>`` for each Redis channel."""
    if kind != "redis":
        return f"adf-{kind}"
    slug = "-".join(_id_words(key or ""))
    base = f"adf-redis-{slug}" if slug else "adf-redis-channel"
    cid, n = base, 2
    taken = set(taken)
    while cid in taken:
        cid, n = f"{base}-v{n}", n + 1
    return cid


# --------------------------------------------------------------------------- rendering


@dataclass
class ManifestOptions:
    """What ``adf spin manifest`` generates; every path in the manifest is relative to ``manifest_dir``."""

    name: str
    version: str = "0.1.0"
    description: str = ""
    wasm_dir: str = DEFAULT_WASM_DIR
    manifest_file: str = "spin.toml"
    cron_expression: str = DEFAULT_CRON_EXPRESSION
    mqtt_qos: int = 1
    redis_address: str = DEFAULT_REDIS_ADDRESS
    mqtt_address: str = DEFAULT_MQTT_ADDRESS
    log_level: str = "info"
    #: relative file-source paths are resolved against this directory (default: the cwd)
    base_dir: str | None = None


def _rel(path: str, start: str) -> str:
    return os.path.relpath(path, start).replace(os.sep, "/")


def _step_module_files(flow: FlowFile, manifest_dir: str) -> list[str]:
    """The project's own step modules (for ``build.watch``): .py files found outside installed packages."""
    out: list[str] = []
    search = _search_path(flow)
    for step in flow.spec.steps:
        function = step.get("function")
        if not isinstance(function, str) or ":" not in function:
            continue
        spec = _find_module(function.partition(":")[0], search)
        origin = spec.origin if spec else None
        if origin and origin.endswith(".py") and not _is_installed_package(origin) \
                and origin.startswith(os.path.dirname(flow.path) + os.sep):
            rel = _rel(origin, manifest_dir)
            if rel not in out:
                out.append(rel)
    return out


def spin_registry() -> Registry:
    """A registry that knows the Spin-native connectors (``spin_app.connectors``) besides core's,
    without changing the process-wide one."""
    import importlib

    from core.sink import Sink
    from core.source import Source

    reg = Registry()
    try:
        connectors = importlib.import_module("spin_app.connectors")
    except ImportError:
        return reg
    for obj in list(vars(connectors).values()):
        if not isinstance(obj, type) or obj.__module__ != connectors.__name__:
            continue
        type_name: str = getattr(obj, "type_name", None) or ""
        if not type_name:
            continue
        if issubclass(obj, Source):
            reg.register("source", type_name, obj, origin="spin_app.connectors")
        elif issubclass(obj, Sink):
            reg.register("sink", type_name, obj, origin="spin_app.connectors")
    return reg


#: Connector attributes that name a host: not offered as variables, since a different host
#: would also need another ``allowed_outbound_hosts`` entry (fixed when the app loads).
_ADDRESS_ATTRIBUTES = frozenset({"address", "url", "endpoint", "endpoint_url"})


def secret_variables(flow: FlowFile, reg: Registry | None = None) -> dict[str, str]:
    """``{adf_flow_<slug>_<section>_<attribute>: spec value}`` for every secret attribute the
    flow's spec sets (the application declares them with ``secret = true``)."""
    reg = reg or spin_registry()
    out: dict[str, str] = {}
    for section, kind, cfg in _connector_sections(flow.spec):
        try:
            cls = reg.resolve(kind, str(cfg.get("type") or ""))
            secret = cls.secret_keys()
        except (AdfError, ImportError, AttributeError):
            continue
        for attr in sorted(secret - _ADDRESS_ATTRIBUTES):
            value = cfg.get(attr)
            if value is None:
                continue
            name = "_".join(["adf_flow", flow_slug(flow.name), *_id_words(section), *_id_words(attr)])
            out[name] = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return out


def render_manifest(flows: Sequence[FlowFile], plan: Mapping[str, Mapping[str, str]],  # noqa: C901
                    options: ManifestOptions, manifest_dir: str, reg: Registry | None = None) -> str:
    """The text of ``spin.toml`` for ``flows`` routed by ``plan`` (see :func:`plan_routes`)."""
    manifest_dir = os.path.abspath(manifest_dir)
    reg = reg or spin_registry()
    by_name = {f.name: f for f in flows}
    components: list[dict[str, Any]] = []
    taken: set[str] = set()
    for kind in TRIGGER_KINDS:
        routes = plan.get(kind)
        if not routes:
            continue
        if kind == "redis":
            for i, (channel, flow) in enumerate(sorted(routes.items())):
                cid = component_id("redis", channel, taken)
                taken.add(cid)
                components.append({"id": cid, "kind": kind, "routes": {channel: flow}, "flow_names": [flow],
                                   "channel": channel, "build": i == 0})
        else:
            cid = component_id(kind)
            taken.add(cid)
            flow_names = list(routes) if kind == "cron" else list(routes.values())
            components.append({"id": cid, "kind": kind, "routes": dict(routes), "flow_names": flow_names,
                               "build": True})

    uses_redis_var = "redis" in plan
    secrets: dict[str, dict[str, str]] = {f.name: secret_variables(f, reg) for f in flows}
    for comp in components:
        comp["flows"] = [by_name[n] for n in sorted(set(comp["flow_names"]))]
        hosts: list[str] = []
        needs_redis = comp["kind"] == "redis"
        for f in comp["flows"]:
            h, needs = outbound_hosts(f)
            hosts += [x for x in h if x not in hosts]
            needs_redis = needs_redis or needs
        if needs_redis:
            uses_redis_var = True
            if "{{ redis_address }}" not in hosts:
                hosts.append("{{ redis_address }}")
        if comp["kind"] == "mqtt" and "{{ mqtt_address }}" not in hosts:
            hosts.append("{{ mqtt_address }}")  # the component publishes its results there (outbound MQTT)
        comp["hosts"] = hosts
        comp["needs_redis"] = needs_redis
    used_flows = sorted({f.name for comp in components for f in comp["flows"]})

    w = _TomlWriter()
    w.comment(f"{GENERATED_MARKER} (ActiveDataFlow): regenerate it with the same options rather than")
    w.comment("editing it; `adf spin manifest ... --check` reports drift, `adf spin validate` checks it.")
    w.comment("The conventions (components, variables, routes) are described in docs/SPIN.md.")
    w.kv("spin_manifest_version", 2)
    w.table("application")
    w.kv("name", options.name)
    w.kv("version", options.version)
    w.kv("description", options.description or f"ActiveDataFlow flows: {', '.join(sorted(by_name))}")
    if "redis" in plan:
        w.table("application.trigger.redis")
        w.kv("address", "{{ redis_address }}")
    if "mqtt" in plan:
        w.table("application.trigger.mqtt")
        w.kv("address", "{{ mqtt_address }}")
        w.kv("username", "{{ mqtt_username }}")
        w.kv("password", "{{ mqtt_password }}")
        w.kv("keep_alive_interval", "30")

    w.table("variables")
    w.kv("log_level", {"default": options.log_level, "description": "debug, info, warning or error"})
    w.kv("adf_json", {"default": "{}", "description": "configuration of every flow: a JSON object "
                                                      "(nested or dotted keys), the manifest layer"})
    for name in used_flows:
        w.kv(f"adf_flow_{flow_slug(name)}_json", {"default": "{}", "description": f"configuration of flow {name}"})
        for var, value in secrets[name].items():
            w.kv(var, {"default": value, "secret": True, "description": f"secret value of flow {name}"})
    if uses_redis_var:
        w.kv("redis_address", {"default": options.redis_address,
                               "description": "Redis of the Redis trigger and of outbound Redis"})
    if "mqtt" in plan:
        w.kv("mqtt_address", {"default": options.mqtt_address,
                              "description": "MQTT broker of the MQTT trigger and of the results"})
        w.kv("mqtt_username", {"default": ""})
        w.kv("mqtt_password", {"default": "", "secret": True})
        w.kv("mqtt_response_topic", {"default": "{topic}/results",
                                     "description": "where a message's results are published ({topic}: its topic)"})
        w.kv("mqtt_response_via", {"default": "mqtt", "description": "mqtt, or redis (outbound Redis)"})

    for comp in components:
        kind = comp["kind"]
        if kind == "http":
            w.array_table("trigger.http")
            w.kv("route", HTTP_TRIGGER_ROUTE)
            w.kv("component", comp["id"])
        elif kind == "redis":
            w.array_table("trigger.redis")
            w.kv("channel", comp["channel"])
            w.kv("component", comp["id"])
        elif kind == "mqtt":
            for topic in comp["routes"]:
                w.array_table("trigger.mqtt")
                w.kv("component", comp["id"])
                w.kv("topic", topic)
                w.kv("qos", str(options.mqtt_qos))
        else:
            w.array_table("trigger.cron")
            w.kv("component", comp["id"])
            w.kv("cron_expression", options.cron_expression)

    redis_flows = sorted({f for f in (plan.get("redis") or {}).values()})
    for comp in components:
        kind, cid = comp["kind"], comp["id"]
        w.table(f"component.{cid}")
        w.kv("description", _component_description(comp))
        w.kv("source", f"{options.wasm_dir.rstrip('/')}/{WASM_FILES[kind]}")
        mounts: list[Mount] = []
        for f in comp["flows"]:
            mounts.append(Mount(_rel(f.path, manifest_dir), f.mount_destination))
        for f in comp["flows"]:
            for m in data_mounts(f, manifest_dir, options.base_dir):
                if m not in mounts:
                    mounts.append(m)
        w.kv("files", [{"source": m.source, "destination": m.destination} for m in mounts])
        w.kv("key_value_stores", ["default"])
        w.kv("sqlite_databases", ["default"])
        w.kv("allowed_outbound_hosts", comp["hosts"])
        w.table(f"component.{cid}.variables")
        w.kv("adf_trigger", kind)
        w.kv("adf_flows", _json({f.name: f.mount_destination for f in comp["flows"]}))
        if kind == "cron":
            w.kv("adf_routes", _json({f: int(v) for f, v in comp["routes"].items()}))
        else:
            w.kv("adf_routes", _json(comp["routes"]))
        if kind == "redis":
            w.kv("adf_channel", comp["channel"])
        if kind == "mqtt":
            for name in ("address", "username", "password", "response_topic", "response_via"):
                w.kv(f"adf_mqtt_{name}", f"{{{{ mqtt_{name} }}}}")
        if comp["needs_redis"]:
            w.kv("adf_redis_address", "{{ redis_address }}")
        w.kv("adf_log_level", "{{ log_level }}")
        w.kv("adf_json", "{{ adf_json }}")
        for f in comp["flows"]:
            var = f"adf_flow_{flow_slug(f.name)}_json"
            w.kv(var, f"{{{{ {var} }}}}")
            for secret in secrets[f.name]:
                w.kv(secret, f"{{{{ {secret} }}}}")
        if comp["build"]:
            w.table(f"component.{cid}.build")
            w.kv("command", f"adf spin build --manifest {options.manifest_file} "
                            f"--out {options.wasm_dir.rstrip('/')} --trigger {kind}")
            watch: list[str] = []
            for f in comp["flows"] if kind != "redis" else [by_name[n] for n in redis_flows]:
                for p in [_rel(f.path, manifest_dir), *_step_module_files(f, manifest_dir)]:
                    if p not in watch:
                        watch.append(p)
            w.kv("watch", watch)
    return w.text()


def _component_description(comp: Mapping[str, Any]) -> str:
    kind = comp["kind"]
    if kind == "http":
        return "ActiveDataFlow HTTP trigger: GET|POST /flows/<flow>/run runs a flow, GET /flows lists them"
    if kind == "redis":
        return f"ActiveDataFlow Redis trigger: a message on {comp['channel']!r} runs its flow"
    if kind == "cron":
        return "ActiveDataFlow cron trigger: each tick runs the flows that are due"
    return "ActiveDataFlow MQTT trigger: a message on a routed topic runs its flow"


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


# --------------------------------------------------------------------------- validation


@dataclass
class ValidationReport:
    """The result of :func:`validate_manifest`."""

    manifest: str
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: component id -> trigger kind (ADF components only)
    components: dict[str, str] = field(default_factory=dict)
    #: flow name -> host spec path (absolute)
    flows: dict[str, str] = field(default_factory=dict)
    #: trigger kind -> host path of its .wasm (absolute)
    wasm: dict[str, str] = field(default_factory=dict)
    triggers: dict[str, int] = field(default_factory=dict)
    #: the errors that break a rule of Spin 3 or of a pinned trigger plugin (Spin would refuse the
    #: manifest whatever the flows), a subset of ``errors``
    rule_errors: list[str] = field(default_factory=list)
    #: trigger kind -> ``adf_routes`` of its components (merged)
    routes: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: component variables that feed the flows' configuration (not :data:`CONTROL_VARIABLES`)
    config_variables: list[str] = field(default_factory=list)
    #: the default of the ``redis_address`` application variable
    redis_address: str | None = None

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict[str, Any]:
        return {"manifest": self.manifest, "valid": self.ok, "errors": self.errors, "warnings": self.warnings,
                "components": self.components, "flows": self.flows, "wasm": self.wasm, "triggers": self.triggers,
                "routes": self.routes}

    def summary(self) -> str:
        triggers = ", ".join(f"{n} {k}" for k, n in self.triggers.items()) or "none"
        return (f"{len(self.components)} component(s) ({', '.join(self.components) or 'none'}), "
                f"{len(self.flows)} flow(s) ({', '.join(sorted(self.flows)) or 'none'}), triggers: {triggers}")


def _templates(value: str) -> list[str]:
    return [m.group(1) for m in _TEMPLATE_RE.finditer(value)]


def _variable_name_problem(name: str) -> str | None:
    problem = spin_id_problem(name, "_", lower=True)
    if problem is None:
        return None
    return f"variable name {name!r} is invalid: {problem} (lower_snake_case){_rule('id')}"


def validate_manifest(path: str, *, build_check: bool | None = True, reg: Registry | None = None,  # noqa: C901
                      text: str | None = None) -> ValidationReport:
    """Check a manifest and every flow it bundles; see ``adf spin validate``. The one checker of
    Spin 3's rules (:data:`RULES`): the generator runs it on what it is about to write (``text``,
    read as if it were at ``path``) and refuses what it refuses.

    With ``build_check`` a missing component ``.wasm`` is an error, with False a warning, with
    None (before a build) not reported.
    """
    report = ValidationReport(manifest=path)
    warn = report.warnings.append

    def err(message: str) -> None:
        report.errors.append(message)
        if "[rule: " in message:
            report.rule_errors.append(message)

    reg = reg or spin_registry()
    try:
        if text is not None:
            doc = tomllib.loads(text)
        else:
            with open(path, "rb") as fh:
                doc = tomllib.load(fh)
    except FileNotFoundError:
        err(f"{path}: no such manifest (generate one with `adf spin manifest --flow SPEC`)")
        return report
    except (OSError, tomllib.TOMLDecodeError) as exc:
        err(f"{path}: not valid TOML: {exc}")
        return report
    base = os.path.dirname(os.path.abspath(path))

    version = doc.get("spin_manifest_version")
    if version != 2:
        err(f"spin_manifest_version must be 2 (Spin 3 manifest format), got {version!r}")
    unknown = _unknown_keys(doc, _TOP_KEYS)
    if unknown:
        err(f"unknown top-level key(s) {', '.join(unknown)}{_rule('keys')}")

    app = doc.get("application")
    declared: dict[str, Any] = {}
    if not isinstance(app, dict):
        err("[application] is required (name, version, description)")
        app = {}
    else:
        name = app.get("name")
        if not isinstance(name, str) or not _APP_NAME_RE.match(name):
            err(f"application.name {name!r} is required: letters, digits, '-' and '_'")
        ver = app.get("version")
        if ver is not None and not (isinstance(ver, str) and re.match(r"^\d+\.\d+\.\d+", ver)):
            err(f"application.version {ver!r} must be major.minor.patch")
        unknown = _unknown_keys(app, _APPLICATION_KEYS)
        if unknown:
            err(f"application: unknown key(s) {', '.join(unknown)}{_rule('keys')}")

    variables = doc.get("variables", {})
    if not isinstance(variables, dict):
        err("[variables] must be a table")
        variables = {}
    for vname, vdef in variables.items():
        problem = _variable_name_problem(vname)
        if problem:
            err(f"variables.{vname}: {problem}")
        if not isinstance(vdef, dict):
            err(f"variables.{vname}: must be a table like {{ default = \"...\" }}")
            continue
        declared[vname] = vdef
        unknown = _unknown_keys(vdef, _VARIABLE_KEYS)
        if unknown:
            err(f"variables.{vname}: unknown key(s) {', '.join(unknown)}{_rule('keys')}")
        if "default" in vdef and not isinstance(vdef["default"], str):
            err(f"variables.{vname}: default must be a string, got {type(vdef['default']).__name__}{_rule('variables')}")
        for flag in ("required", "secret"):
            if flag in vdef and not isinstance(vdef[flag], bool):
                err(f"variables.{vname}: {flag} must be true or false{_rule('variables')}")
        if "description" in vdef and not isinstance(vdef["description"], str):
            err(f"variables.{vname}: description must be a string{_rule('variables')}")
        if "default" not in vdef and vdef.get("required") is not True:
            err(f"variables.{vname}: needs a default or required = true{_rule('variables')}")
        if "default" in vdef and vdef.get("required") is True:
            err(f"variables.{vname}: a required variable cannot have a default{_rule('variables')}")

    redis_def = declared.get("redis_address")
    if isinstance(redis_def, dict) and isinstance(redis_def.get("default"), str):
        report.redis_address = redis_def["default"]

    def check_refs(where: str, value: Any) -> None:
        if isinstance(value, str):
            for ref in _templates(value):
                if ref not in declared:
                    err(f"{where}: references {{{{ {ref} }}}}, which [variables] does not declare")

    app_triggers = app.get("trigger", {}) if isinstance(app.get("trigger", {}), dict) else {}
    for tkind, tconf in app_triggers.items():
        if isinstance(tconf, dict):
            for k, v in tconf.items():
                check_refs(f"application.trigger.{tkind}.{k}", v)
            _check_app_trigger(tkind, tconf, err)

    components = doc.get("component")
    if not isinstance(components, dict) or not components:
        err("[component.<id>] tables are required (run `adf spin manifest`)")
        components = {}

    triggers = doc.get("trigger")
    if not isinstance(triggers, dict) or not triggers:
        err("no [[trigger.<kind>]] entries: nothing would run the components")
        triggers = {}
    served: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for tkind, entries in triggers.items():
        if not isinstance(entries, list):
            err(f"trigger.{tkind} must be an array of tables ([[trigger.{tkind}]])")
            continue
        report.triggers[tkind] = len(entries)
        if tkind not in TRIGGER_KINDS:
            warn(f"trigger.{tkind}: not a trigger ActiveDataFlow builds components for (not checked)")
        for i, entry in enumerate(entries):
            where = f"trigger.{tkind}[{i}]"
            if not isinstance(entry, dict):
                err(f"{where}: must be a table")
                continue
            comp = entry.get("component")
            if not isinstance(comp, str) or not comp:
                err(f"{where}: 'component' is required")
            elif comp not in components:
                err(f"{where}: component {comp!r} is not defined ([component.{comp}])")
            else:
                served.setdefault(comp, []).append((tkind, entry))
            for k, v in entry.items():
                check_refs(f"{where}.{k}", v)
            _check_trigger_entry(tkind, where, entry, app_triggers, err)

    flow_cache: dict[str, FlowFile | None] = {}
    for cid, comp in components.items():
        _check_component(cid, comp, base, served.get(cid, []), declared, flow_cache, report,
                         build_check, reg, check_refs)
    for name in declared:
        used = any(name in _templates(str(v)) for c in components.values() if isinstance(c, dict)
                   for v in (c.get("variables") or {}).values()) or any(
            name in _templates(str(v)) for t in app_triggers.values() if isinstance(t, dict) for v in t.values()) or any(
            name in _templates(str(h)) for c in components.values() if isinstance(c, dict)
            for h in (c.get("allowed_outbound_hosts") or []))
        if not used:
            warn(f"variables.{name}: declared but no component or trigger uses it")
    for message in slug_collisions(report.flows):
        err(message)
    return report


def _check_app_trigger(kind: str, conf: Mapping[str, Any], err: Any) -> None:
    """``[application.trigger.<kind>]``: the keys the trigger knows; the MQTT plugin needs all four."""
    allowed = _APP_TRIGGER_KEYS.get(kind)
    if allowed is None:
        return  # a trigger ActiveDataFlow does not know: its plugin checks it
    rule = _rule(_TRIGGER_RULE[kind])
    unknown = _unknown_keys(conf, allowed)
    if unknown:
        err(f"application.trigger.{kind}: unknown key(s) {', '.join(unknown)}{rule}")
    for key in sorted(allowed):
        value = conf.get(key)
        if kind == "mqtt" and key not in conf:
            err(f"application.trigger.mqtt: {key!r} is required (a string; \"\" for none){rule}")
        elif key in conf and not isinstance(value, str):
            err(f"application.trigger.{kind}.{key}: must be a string, got {type(value).__name__}{rule}")
    keep_alive = conf.get("keep_alive_interval")
    if kind == "mqtt" and isinstance(keep_alive, str) and not keep_alive.isdigit():
        err(f"application.trigger.mqtt.keep_alive_interval: {keep_alive!r} must be a whole number of seconds "
            f"(the plugin parses it without resolving variables){rule}")


def _check_trigger_entry(kind: str, where: str, entry: Mapping[str, Any], app_triggers: Mapping[str, Any],  # noqa: C901
                         err: Any) -> None:
    allowed = _TRIGGER_KEYS.get(kind)
    if allowed is not None:
        unknown = _unknown_keys(entry, allowed)
        if unknown:
            err(f"{where}: unknown key(s) {', '.join(unknown)}{_rule(_TRIGGER_RULE[kind])}")
    if kind == "http":
        route = entry.get("route")
        if isinstance(route, dict):
            if route.get("private") is not True:
                err(f"{where}: a table route must be {{ private = true }}")
        elif not isinstance(route, str):
            err(f"{where}: 'route' is required (e.g. \"/flows/my_flow\"){_rule('http')}")
        else:
            problem = _http_route_problem(route)
            if problem:
                err(f"{where}: {problem}")
    elif kind == "redis":
        channel = entry.get("channel")
        if not isinstance(channel, str) or not channel.strip():
            err(f"{where}: 'channel' must be a non-empty string{_rule('redis')}")
        redis_app = app_triggers.get("redis") if isinstance(app_triggers.get("redis"), dict) else {}
        if not entry.get("address") and not (redis_app or {}).get("address"):
            err(f"{where}: no Redis address: set [application.trigger.redis] address (or 'address' here){_rule('redis')}")
    elif kind == "cron":
        expr = entry.get("cron_expression")
        if not isinstance(expr, str):
            err(f"{where}: 'cron_expression' is required (6 fields, e.g. \"{DEFAULT_CRON_EXPRESSION}\"){_rule('cron')}")
        else:
            problem = cron_expression_problem(expr)
            if problem:
                err(f"{where}: {problem}{_rule('cron')}")
    elif kind == "mqtt":
        rule = _rule("mqtt")
        topic = entry.get("topic")
        if not isinstance(topic, str) or not topic.strip():
            err(f"{where}: 'topic' must be a non-empty string{rule}")
        elif "{{" not in topic:
            problem = _mqtt_topic_problem(topic)
            if problem:
                err(f"{where}: {problem}")
        qos = entry.get("qos")
        if not isinstance(qos, str):
            err(f"{where}: qos must be a string \"0\", \"1\" or \"2\" (the plugin reads a string), got {qos!r}{rule}")
        elif qos not in ("0", "1", "2"):
            err(f"{where}: qos must be 0, 1 or 2, got {qos!r}{rule}")
        mqtt_app = app_triggers.get("mqtt") if isinstance(app_triggers.get("mqtt"), dict) else None
        if not mqtt_app or not mqtt_app.get("address"):
            err(f"{where}: [application.trigger.mqtt] address is required by the MQTT trigger{rule}")


def _parse_json_variable(cid: str, name: str, value: Any, err: Any) -> Any:
    if not isinstance(value, str):
        err(f"component.{cid}.variables.{name}: must be a string of JSON")
        return None
    try:
        data = json.loads(value)
    except json.JSONDecodeError as exc:
        err(f"component.{cid}.variables.{name}: not valid JSON ({exc})")
        return None
    if not isinstance(data, dict):
        err(f"component.{cid}.variables.{name}: must be a JSON object")
        return None
    return data


def _check_component(cid: str, comp: Any, base: str, served: list[tuple[str, dict[str, Any]]],  # noqa: C901
                     declared: Mapping[str, Any], flow_cache: dict[str, FlowFile | None],
                     report: ValidationReport, build_check: bool | None, reg: Registry | None,
                     check_refs: Any) -> None:
    err, warn = report.errors.append, report.warnings.append
    where = f"component.{cid}"
    problem = spin_id_problem(cid, "-", lower=False)
    if problem:
        err(f"{where}: component ids must be kebab-case: {problem}{_rule('id')}")
    if not isinstance(comp, dict):
        err(f"{where}: must be a table")
        return
    unknown = _unknown_keys(comp, _COMPONENT_KEYS)
    if unknown:
        err(f"{where}: unknown key(s) {', '.join(unknown)}{_rule('keys')}")
    if not served:
        warn(f"{where}: no trigger runs this component")
    source = comp.get("source")
    wasm_path: str | None = None
    if isinstance(source, str):
        wasm_path = os.path.normpath(os.path.join(base, source))
        if not os.path.isfile(wasm_path) and build_check is not None:
            msg = f"{where}: source {source} does not exist yet: run `adf spin build` (it writes the .wasm files)"
            (err if build_check else warn)(msg)
    elif isinstance(source, dict):
        if not source.get("url"):
            err(f"{where}: a table source needs url and digest")
    else:
        err(f"{where}: 'source' is required (the component's .wasm)")

    mounts: list[Mount] = []
    files = comp.get("files", [])
    if not isinstance(files, list):
        err(f"{where}.files: must be an array")
        files = []
    for i, entry in enumerate(files):
        fw = f"{where}.files[{i}]"
        if isinstance(entry, str):
            problem = _file_source_problem(_glob_prefix(entry), base, pattern=bool(_GLOB_CHARS.search(entry)))
            if problem:
                err(f"{fw}: {problem}{_rule('files')}")
            mounts.append(Mount(entry, _inside_path(_glob_prefix(entry))))
        elif isinstance(entry, dict):
            src, dst = entry.get("source"), entry.get("destination")
            if not isinstance(src, str) or not isinstance(dst, str):
                err(f"{fw}: needs 'source' and 'destination' strings{_rule('keys')}")
                continue
            unknown = _unknown_keys(entry, ("source", "destination"))
            if unknown:
                err(f"{fw}: unknown key(s) {', '.join(unknown)}{_rule('keys')}")
            if not dst.startswith("/"):
                err(f"{fw}: destination {dst!r} must be an absolute path{_rule('files')}")
            problem = _file_source_problem(src, base, pattern=False)
            if problem:
                err(f"{fw}: {problem}{_rule('files')}")
            mounts.append(Mount(src, dst))
        else:
            err(f"{fw}: must be a path or {{ source, destination }}{_rule('keys')}")

    for key in ("key_value_stores", "sqlite_databases", "allowed_outbound_hosts"):
        value = comp.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            err(f"{where}.{key}: must be an array of strings{_rule('keys')}")
        elif key != "allowed_outbound_hosts":
            for label in value:
                problem = _label_problem(label)
                if problem:
                    err(f"{where}.{key}: {problem}{_rule('labels')}")
    for host in comp.get("allowed_outbound_hosts", []) or []:
        if not isinstance(host, str):
            continue
        check_refs(f"{where}.allowed_outbound_hosts", host)
        problem = outbound_host_problem(host)
        if problem:
            err(f"{where}.allowed_outbound_hosts: {problem}{_rule('hosts')}")

    variables = comp.get("variables", {})
    if not isinstance(variables, dict):
        err(f"{where}.variables: must be a table")
        variables = {}
    for vname, value in variables.items():
        problem = _variable_name_problem(vname)
        if problem:
            err(f"{where}.variables.{vname}: {problem}")
        if not isinstance(value, str):
            err(f"{where}.variables.{vname}: values must be strings, got {type(value).__name__}")
            continue
        check_refs(f"{where}.variables.{vname}", value)

    build = comp.get("build")
    if build is not None and (not isinstance(build, dict) or not isinstance(build.get("command"), str | list)):
        err(f"{where}.build: needs a 'command' string{_rule('keys')}")
    elif isinstance(build, dict):
        unknown = _unknown_keys(build, _BUILD_KEYS)
        if unknown:
            err(f"{where}.build: unknown key(s) {', '.join(unknown)}{_rule('keys')}")

    kind = variables.get("adf_trigger")
    if kind is None:
        if cid.startswith("adf-"):
            err(f"{where}: an ActiveDataFlow component needs the variables {', '.join(COMPONENT_VARIABLES)}")
        return  # not ours: Spin checks the rest
    if kind not in TRIGGER_KINDS:
        err(f"{where}.variables.adf_trigger: {kind!r} is not one of {', '.join(TRIGGER_KINDS)}")
        return
    report.components[cid] = kind
    for tkind, _entry in served:
        if tkind != kind:
            err(f"{where}: built for the {kind} trigger (adf_trigger) but [[trigger.{tkind}]] runs it")
    if isinstance(source, str):
        if os.path.basename(source) != WASM_FILES[kind]:
            warn(f"{where}: source {source} is not {WASM_FILES[kind]}, the file `adf spin build` writes for {kind}")
        if wasm_path:
            other = report.wasm.setdefault(kind, wasm_path)
            if other != wasm_path:
                err(f"{where}: {kind} components load different files ({other} and {wasm_path})")
    missing = [v for v in COMPONENT_VARIABLES if v not in variables]
    if missing:
        err(f"{where}.variables: missing {', '.join(missing)}")
    flows = _parse_json_variable(cid, "adf_flows", variables.get("adf_flows", "{}"), err) or {}
    routes = _parse_json_variable(cid, "adf_routes", variables.get("adf_routes", "{}"), err) or {}
    report.routes.setdefault(kind, {}).update(routes)
    report.config_variables.extend(
        v for v in variables if v not in CONTROL_VARIABLES and v not in report.config_variables)
    for vname, value in variables.items():
        if vname == "adf_json" or (vname.startswith("adf_flow_") and vname.endswith("_json")):
            if isinstance(value, str) and not _templates(value):
                _parse_json_variable(cid, vname, value, err)
    if kind == "redis":
        channel = variables.get("adf_channel")
        channels = [str(e.get("channel")) for t, e in served if t == "redis"]
        if not channel:
            err(f"{where}.variables: adf_channel is required (Spin's Redis trigger does not pass the channel)")
        elif channels and set(channels) != {channel}:
            err(f"{where}: subscribed to {', '.join(sorted(set(channels)))} but adf_channel is {channel!r}; "
                "give each Redis channel its own component")
        for c in channels:
            if any(ch in c for ch in "*?["):
                warn(f"{where}: Spin subscribes to the channel name {c!r} literally (no patterns)")

    if kind == "cron":
        for fname, interval in routes.items():
            if fname not in flows:
                err(f"{where}.variables.adf_routes: flow {fname!r} is not bundled (adf_flows)")
            if isinstance(interval, bool) or not isinstance(interval, int) or interval <= 0:
                err(f"{where}.variables.adf_routes: flow {fname!r}: the cron interval must be a number of seconds > 0, "
                    f"got {interval!r}")
    for key, target in routes.items() if kind != "cron" else ():
        if not isinstance(target, str):
            err(f"{where}.variables.adf_routes: {key!r} must map to one flow name, got {target!r}")
            continue
        if target not in flows:
            err(f"{where}.variables.adf_routes: {key!r} routes to flow {target!r}, which adf_flows does not bundle")
        if kind == "http":
            if not any(_http_route_covers(str(e.get("route")), key) for t, e in served if t == "http"):
                err(f"{where}.variables.adf_routes: no [[trigger.http]] route of this component serves {key!r}")
            if key != http_run_path(target):
                warn(f"{where}.variables.adf_routes: {key!r}: HTTP runs a flow at {http_run_path(target)} "
                     "(handlers.invoke routes by path)")
            continue
        problem = _route_key_problem(kind, key)
        if problem:
            err(f"{where}.variables.adf_routes: {problem}")
        if kind == "mqtt" and key not in [e.get("topic") for t, e in served if t == "mqtt"]:
            err(f"{where}.variables.adf_routes: no [[trigger.mqtt]] topic {key!r} runs this component")
        if kind == "redis" and key != variables.get("adf_channel"):
            err(f"{where}.variables.adf_routes: {key!r} is not this component's channel "
                f"{variables.get('adf_channel')!r}")
    if kind == "mqtt":
        for t, e in served:
            if t == "mqtt" and e.get("topic") not in routes:
                err(f"{where}: [[trigger.mqtt]] topic {e.get('topic')!r} has no entry in adf_routes")
    if kind == "redis":
        for t, e in served:
            if t == "redis" and e.get("channel") not in routes:
                err(f"{where}: channel {e.get('channel')!r} has no entry in adf_routes")

    # the bundled flows
    by_destination = {m.destination: m for m in mounts}
    for fname, inside in flows.items():
        fw = f"{where}.variables.adf_flows: flow {fname!r}"
        mount = by_destination.get(str(inside))
        if mount is None:
            err(f"{fw}: {inside} is not mounted by a files entry {{ source = \"<spec>\", destination = \"{inside}\" }}")
            continue
        host = os.path.normpath(os.path.join(base, mount.source))
        if host not in flow_cache:
            try:
                flow_cache[host] = load_flow_file(host)
            except ConfigError as exc:
                flow_cache[host] = None
                for p in exc.problems:
                    if p not in report.errors:
                        err(f"flow spec {mount.source}: {p}")
        flow = flow_cache[host]
        if flow is None:
            continue
        if flow.name != fname:
            err(f"{fw}: the spec {mount.source} is named {flow.name!r}")
        known = report.flows.setdefault(flow.name, host)
        if known != host:
            err(f"flow {flow.name!r} comes from two specs: {known} and {host}")
        found = check_flow_for_spin(flow, mounts=mounts, reg=reg, component=cid)
        for msg in found.errors:
            if msg not in report.errors:
                err(msg)
        for msg in found.warnings:
            if msg not in report.warnings:
                warn(msg)
        hosts, needs_redis = outbound_hosts(flow)
        allowed = comp.get("allowed_outbound_hosts") or []
        for h in hosts:
            if h not in allowed:
                err(f"flow {flow.name}: {where}.allowed_outbound_hosts lacks {h!r} (the flow's connectors reach it)")
        if needs_redis and "adf_redis_address" not in variables:
            err(f"flow {flow.name}: spin_redis without an address needs {where}.variables.adf_redis_address")


def _http_route_covers(route: str, key: str) -> bool:
    if route == key:
        return True
    if route.endswith("/..."):
        prefix = route[:-4]
        return key == prefix or key.startswith(prefix + "/") or prefix == ""
    return False


# --------------------------------------------------------------------------- running a manifest locally


@dataclass
class ComponentRuntime:
    """What a host needs to run one component of a manifest the way Spin would."""

    id: str
    #: ``adf_trigger`` of ADF components, else the kind of the first trigger that runs it
    kind: str
    #: absolute path of the .wasm
    wasm: str
    #: (absolute host path, guest path) of each ``files`` entry; host paths may be files
    mounts: list[tuple[str, str]]
    #: component variables with ``{{ app_variable }}`` resolved
    variables: dict[str, str]
    #: the ``[[trigger.<kind>]]`` entries that run it
    triggers: list[dict[str, Any]]
    key_value_stores: list[str] = field(default_factory=list)
    sqlite_databases: list[str] = field(default_factory=list)
    allowed_outbound_hosts: list[str] = field(default_factory=list)


def resolve_variables(doc: Mapping[str, Any], environ: Mapping[str, str] | None = None,
                      overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    """Application variables as Spin resolves them: ``overrides`` (``--variable``), then
    ``SPIN_VARIABLE_<NAME>`` in ``environ``, then the default. A required variable without a
    value raises ``ValueError``."""
    env = os.environ if environ is None else environ
    out: dict[str, str] = {}
    missing: list[str] = []
    for name, vdef in (doc.get("variables") or {}).items():
        vdef = vdef if isinstance(vdef, dict) else {}
        if overrides and name in overrides:
            out[name] = str(overrides[name])
        elif f"SPIN_VARIABLE_{name.upper()}" in env:
            out[name] = env[f"SPIN_VARIABLE_{name.upper()}"]
        elif "default" in vdef:
            out[name] = str(vdef["default"])
        else:
            missing.append(name)
    if missing:
        raise ValueError(f"required variable(s) without a value: {', '.join(missing)} "
                         f"(set SPIN_VARIABLE_{missing[0].upper()})")
    return out


def _expand(value: str, values: Mapping[str, str]) -> str:
    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in values:
            raise ValueError(f"{{{{ {name} }}}} is not a declared variable")
        return values[name]

    return _TEMPLATE_RE.sub(sub, value)


def component_runtimes(path: str, *, environ: Mapping[str, str] | None = None,
                       overrides: Mapping[str, str] | None = None) -> list[ComponentRuntime]:
    """Every component of the manifest at ``path``, resolved for a local host.

    Run :func:`validate_manifest` first for readable errors; this raises ``ValueError``.
    """
    with open(path, "rb") as fh:
        doc = tomllib.load(fh)
    base = os.path.dirname(os.path.abspath(path))
    values = resolve_variables(doc, environ, overrides)
    served: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for tkind, entries in (doc.get("trigger") or {}).items():
        for entry in entries if isinstance(entries, list) else []:
            if isinstance(entry, dict) and isinstance(entry.get("component"), str):
                resolved = {k: _expand(v, values) if isinstance(v, str) else v for k, v in entry.items()}
                served.setdefault(entry["component"], []).append((tkind, resolved))
    out: list[ComponentRuntime] = []
    for cid, comp in (doc.get("component") or {}).items():
        variables = {k: _expand(str(v), values) for k, v in (comp.get("variables") or {}).items()}
        triggers = served.get(cid, [])
        kind = variables.get("adf_trigger") or (triggers[0][0] if triggers else "")
        mounts: list[tuple[str, str]] = []
        for entry in comp.get("files") or []:
            if isinstance(entry, dict):
                mounts.append((os.path.normpath(os.path.join(base, str(entry["source"]))), str(entry["destination"])))
            elif isinstance(entry, str):
                mounts.append((os.path.normpath(os.path.join(base, entry)), _inside_path(entry)))
        source = comp.get("source")
        out.append(ComponentRuntime(
            id=cid, kind=kind,
            wasm=os.path.normpath(os.path.join(base, source)) if isinstance(source, str) else "",
            mounts=mounts, variables=variables, triggers=[e for _k, e in triggers],
            key_value_stores=list(comp.get("key_value_stores") or []),
            sqlite_databases=list(comp.get("sqlite_databases") or []),
            allowed_outbound_hosts=[_expand(h, values) for h in comp.get("allowed_outbound_hosts") or []],
        ))
    return out


def stage_files(runtime: ComponentRuntime, root: str) -> str:
    """Copy a component's ``files`` under ``root`` the way Spin does (a snapshot, mounted at
    ``/``), so a host can preopen ``root`` as ``/``. Returns ``root``."""
    import glob
    import shutil

    os.makedirs(root, exist_ok=True)
    for host, guest in runtime.mounts:
        target = os.path.join(root, guest.lstrip("/"))
        if os.path.isdir(host):
            shutil.copytree(host, target, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif os.path.isfile(host):
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copy2(host, target)
        else:  # a glob pattern entry: same relative paths
            prefix = _glob_prefix(host)
            for match in glob.glob(host, recursive=True):
                if os.path.isfile(match):
                    dest = os.path.join(target if guest else root, os.path.relpath(match, prefix))
                    os.makedirs(os.path.dirname(dest), exist_ok=True)
                    shutil.copy2(match, dest)
    return root


# --------------------------------------------------------------------------- TOML writing


_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.match(key) else _toml_str(key)


def _toml_key_path(path: str) -> str:
    return ".".join(_toml_key(p) for p in path.split("."))


def _toml_str(value: str) -> str:
    if '"' in value and "'" not in value and not any(ord(c) < 32 or c == "\x7f" for c in value):
        return f"'{value}'"  # a literal string reads better for JSON
    out = []
    for c in value:
        if c == "\\":
            out.append("\\\\")
        elif c == '"':
            out.append('\\"')
        elif c == "\n":
            out.append("\\n")
        elif c == "\t":
            out.append("\\t")
        elif ord(c) < 32 or c == "\x7f":
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return _toml_str(value)
    if isinstance(value, Mapping):
        if not value:
            return "{}"
        return "{ " + ", ".join(f"{_toml_key(str(k))} = {_toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list | tuple):
        items = [_toml_value(v) for v in value]
        one_line = "[" + ", ".join(items) + "]"
        if len(one_line) <= 88 and not any(isinstance(v, Mapping) for v in value):
            return one_line
        return "[\n" + "".join(f"    {item},\n" for item in items) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


class _TomlWriter:
    """Just enough TOML: comments, key = value, [tables] and [[arrays of tables]]."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def comment(self, text: str) -> None:
        self.lines.append(f"# {text}" if text else "#")

    def kv(self, key: str, value: Any) -> None:
        self.lines.append(f"{_toml_key(key)} = {_toml_value(value)}")

    def table(self, path: str) -> None:
        self._gap()
        self.lines.append(f"[{_toml_key_path(path)}]")

    def array_table(self, path: str) -> None:
        self._gap()
        self.lines.append(f"[[{_toml_key_path(path)}]]")

    def _gap(self) -> None:
        if self.lines and self.lines[-1] != "":
            self.lines.append("")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"
