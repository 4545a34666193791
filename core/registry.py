"""Resolve sources, sinks, steps and runtimes by type name.

Built-in types are listed here by import path (imported only when used, so a connector's
third-party client is never imported unless that connector is asked for). Other packages
add types through entry points:

=========================  =====================================
entry-point group          what it registers
=========================  =====================================
``active_data_flow.sources``   ``name = "pkg.module:SourceClass"``
``active_data_flow.sinks``     ``name = "pkg.module:SinkClass"``
``active_data_flow.steps``     ``name = "pkg.module:StepClass"``
``active_data_flow.runtimes``  ``name = "pkg.module:RuntimeClass"``
=========================  =====================================

or at run time with :func:`register`.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from active_data_flow.errors import MissingExtraError, RegistryError, UnavailableTypeError

__all__ = ["ENTRY_POINT_GROUPS", "KINDS", "OWN_PACKAGE", "Registry", "import_path", "register", "registry"]

KINDS = ("source", "sink", "step", "runtime")
ENTRY_POINT_GROUPS = {kind: f"active_data_flow.{kind}s" for kind in KINDS}

_BUILTINS: dict[str, dict[str, str]] = {
    "source": {
        "file": "active_data_flow.connectors.file:FileSource",
        "sql": "active_data_flow.connectors.sql:SqlSource",
        "memory": "active_data_flow.connectors.memory:MemorySource",
        "payload": "active_data_flow.connectors.memory:PayloadSource",
        "rafka": "active_data_flow.connectors.rafka:RafkaSource",
        "iceberg": "active_data_flow.connectors.iceberg:IcebergSource",
        "http": "active_data_flow.connectors.http:HttpSource",
        "sftp": "active_data_flow.connectors.sftp:SftpSource",
    },
    "sink": {
        "file": "active_data_flow.connectors.file:FileSink",
        "sql": "active_data_flow.connectors.sql:SqlSink",
        "rafka": "active_data_flow.connectors.rafka:RafkaSink",
        "iceberg": "active_data_flow.connectors.iceberg:IcebergSink",
        "http": "active_data_flow.connectors.http:HttpSink",
        "sftp": "active_data_flow.connectors.sftp:SftpSink",
        "cache": "active_data_flow.connectors.cache:CacheSink",
        "stdout": "active_data_flow.connectors.stdout:StdoutSink",
        "memory": "active_data_flow.connectors.memory:MemorySink",
        "response": "active_data_flow.connectors.memory:ResponseSink",
    },
    "step": {
        "python": "active_data_flow.step:PythonStep",
        "filter": "active_data_flow.step:FilterStep",
        "http": "active_data_flow.steps_io:HttpStep",
        "sql": "active_data_flow.steps_io:SqlStep",
        "wasm": "active_data_flow.wasm.step:WasmStep",
    },
    "runtime": {
        "local": "active_data_flow.runtime:LocalRuntime",
    },
}

# Types that exist as an optional part of this distribution (or a planned one): the
# unknown-type error names the extra that adds them.
_EXTRA_HINTS: dict[str, str] = {
    "rafka": "redis",
    "iceberg": "iceberg",
    "wasm": "wasm",
    "sftp": "sftp",
    "flink": "flink",
    "lambda": "lambda",
    "spin": "spin",
    "heartbeat": "web",
    "s3": "s3",
    "postgres": "postgres",
}

T = TypeVar("T")
#: the import package this project installs (everything of ours lives under it)
OWN_PACKAGE = __name__.partition(".")[0]


def import_path(path: str) -> Any:
    """Import ``"package.module:Name"`` (dots after the colon walk attributes)."""
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"expected 'module:name', got {path!r}")
    module = importlib.import_module(module_name)
    obj: Any = module
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def add_import_path(path: str) -> None:
    """Make the modules under ``path`` importable — the step modules beside a spec file or in a
    stored flow's ``python_path``, a flow class in the working directory, a host's specs
    directory. The one place the project changes ``sys.path``: ``path`` is appended once, after
    every entry already there, so it never shadows an installed package."""
    if path not in sys.path:
        sys.path.append(path)


def _is_entry_point(target: Any) -> bool:
    metadata = sys.modules.get("importlib.metadata")
    return metadata is not None and isinstance(target, metadata.EntryPoint)


class Registry:
    """A registry of component types by kind and name."""

    def __init__(self) -> None:
        self._entries: dict[str, dict[str, Any]] = {k: dict(v) for k, v in _BUILTINS.items()}
        self._origins: dict[str, dict[str, str]] = {k: dict.fromkeys(v, "builtin") for k, v in _BUILTINS.items()}
        self._entry_points_loaded = False

    def _check_kind(self, kind: str) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}; kinds: {', '.join(KINDS)}")

    def register(self, kind: str, name: str, target: Any, origin: str = "registered") -> None:
        """Register ``target`` (a class or an ``"module:Class"`` path) as ``name``."""
        self._check_kind(kind)
        self._entries[kind][name] = target
        self._origins[kind][name] = origin

    def _load_entry_points(self) -> None:
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        try:  # on first need: importing and scanning it costs a cold start
            from importlib import metadata
        except ImportError:  # a build without it (a Spin component): no plug-ins there
            return

        for kind, group in ENTRY_POINT_GROUPS.items():
            for ep in metadata.entry_points(group=group):
                if ep.name not in self._entries[kind] or self._origins[kind][ep.name] != "builtin":
                    self._entries[kind][ep.name] = ep
                    dist = getattr(ep, "dist", None)
                    self._origins[kind][ep.name] = f"entry point {group} ({dist.name if dist else ep.value})"

    def names(self, kind: str) -> list[str]:
        self._check_kind(kind)
        self._load_entry_points()
        return sorted(self._entries[kind])

    def origin(self, kind: str, name: str) -> str:
        self._load_entry_points()
        return self._origins[kind].get(name, "?")

    def resolve(self, kind: str, name: str) -> Any:
        """The class registered as ``name``; :class:`RegistryError` when unknown."""
        self._check_kind(kind)
        if not (isinstance(name, str) and self._origins[kind].get(name) == "builtin"):  # never replaced by plug-ins
            self._load_entry_points()
        if not isinstance(name, str) or name not in self._entries[kind]:
            raise RegistryError(kind, str(name), self._entries[kind], _EXTRA_HINTS.get(str(name)))
        target = self._entries[kind][name]
        if isinstance(target, str) or _is_entry_point(target):
            try:
                cls = import_path(target) if isinstance(target, str) else target.load()
            except MissingExtraError:
                raise
            except ImportError as exc:
                module = (target if isinstance(target, str) else target.value).split(":")[0]
                missing = exc.name or ""
                if missing and (module == missing or module.startswith(missing + ".")) and \
                        self._origins[kind].get(name) == "builtin":
                    raise UnavailableTypeError(kind, name, module) from exc
                if (exc.name or "").split(".")[0] == OWN_PACKAGE:
                    raise
                extra = _EXTRA_HINTS.get(name, name)
                raise MissingExtraError(exc.name or str(exc), extra, f"the {kind} type {name!r}") from exc
            if not getattr(cls, "type_name", ""):
                cls.type_name = name
            self._entries[kind][name] = cls
            return cls
        return target

    def build(self, kind: str, section: Mapping[str, Any], run_context: Any = None, **overrides: Any) -> Any:
        """A source, sink or step from its spec section: the class its ``type`` names, configured
        with the rest of the section (and ``overrides``; a step's ``id`` and ``next`` belong to the
        pipeline, not to the step). ``run_context``, when given, is set on it before it is returned.
        Raises what :meth:`resolve` raises, and :class:`~active_data_flow.errors.ConfigError` for the section."""
        own = ("type", "id", "next") if kind == "step" else ("type",)
        made = self.resolve(kind, section.get("type", ""))({**{k: v for k, v in section.items() if k not in own}, **overrides})
        if run_context is not None:
            made.run_context = run_context
        return made


registry = Registry()


def register(kind: str, name: str) -> Callable[[T], T]:
    """Class decorator: ``@register("sink", "mysink")``."""

    def deco(cls: T) -> T:
        registry.register(kind, name, cls)
        if not getattr(cls, "type_name", ""):
            cls.type_name = name  # type: ignore[attr-defined]
        return cls

    return deco
