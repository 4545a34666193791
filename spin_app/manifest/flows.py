"""The flows a manifest bundles, and what each one asks of its component.

:class:`FlowFile` (a spec file, read and parsed), :class:`Mount` (one ``files`` entry),
:class:`Findings` (errors and warnings about a flow), and what a flow needs from the manifest:
the files its ``file`` source reads (:func:`data_mounts`), the hosts its connectors reach
(:func:`outbound_hosts`) and the secret attributes its spec sets (:func:`secret_variables`);
:func:`spin_registry` knows the Spin-native connectors besides core's.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from typing import Any

from active_data_flow.errors import AdfError, SpecError
from active_data_flow.registry import Registry
from active_data_flow.spec import FlowSpec, load_spec_file, parse_spec
from active_data_flow.spin_app.manifest.conventions import (
    FLOWS_MOUNT,
    flow_slug,
    glob_prefix,
    id_words,
    inside_path,
)


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
    be importable on the host; :func:`~active_data_flow.spin_app.manifest.scan.check_flow_for_spin` checks types
    and attributes.
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


def file_source_paths(spec: FlowSpec) -> list[str]:
    """The paths a flow's source names (``path``: one string or a list of them)."""
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
    for path in file_source_paths(flow.spec):
        if "://" in path:
            continue  # refused by check_flow_for_spin
        prefix = glob_prefix(path)
        host = prefix if os.path.isabs(prefix) else os.path.join(base, prefix)
        source = os.path.relpath(os.path.abspath(host), manifest_dir).replace(os.sep, "/")
        out.append(Mount(source=source, destination=inside_path(prefix)))
    return out


def connector_sections(spec: FlowSpec) -> list[tuple[str, str, dict[str, Any]]]:
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
    for _where, _kind, cfg in connector_sections(flow.spec):
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


def spin_registry() -> Registry:
    """A registry that knows the Spin-native connectors (``active_data_flow.spin_app.connectors``) besides core's,
    without changing the process-wide one."""
    import importlib

    from active_data_flow.sink import Sink
    from active_data_flow.source import Source

    reg = Registry()
    try:
        connectors = importlib.import_module("active_data_flow.spin_app.connectors")
    except ImportError:
        return reg
    for obj in list(vars(connectors).values()):
        if not isinstance(obj, type) or obj.__module__ != connectors.__name__:
            continue
        type_name: str = getattr(obj, "type_name", None) or ""
        if not type_name:
            continue
        if issubclass(obj, Source):
            reg.register("source", type_name, obj, origin="active_data_flow.spin_app.connectors")
        elif issubclass(obj, Sink):
            reg.register("sink", type_name, obj, origin="active_data_flow.spin_app.connectors")
    return reg


#: Connector attributes that name a host: not offered as variables, since a different host
#: would also need another ``allowed_outbound_hosts`` entry (fixed when the app loads).
_ADDRESS_ATTRIBUTES = frozenset({"address", "url", "endpoint", "endpoint_url"})


def secret_variables(flow: FlowFile, reg: Registry | None = None) -> dict[str, str]:
    """``{adf_flow_<slug>_<section>_<attribute>: spec value}`` for every secret attribute the
    flow's spec sets (the application declares them with ``secret = true``)."""
    reg = reg or spin_registry()
    out: dict[str, str] = {}
    for section, kind, cfg in connector_sections(flow.spec):
        try:
            cls = reg.resolve(kind, str(cfg.get("type") or ""))
            secret = cls.secret_keys()
        except (AdfError, ImportError, AttributeError):
            continue
        for attr in sorted(secret - _ADDRESS_ATTRIBUTES):
            value = cfg.get(attr)
            if value is None:
                continue
            name = "_".join(["adf_flow", flow_slug(flow.name), *id_words(section), *id_words(attr)])
            out[name] = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return out
