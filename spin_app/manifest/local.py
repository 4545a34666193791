"""Running a manifest's components locally, the way Spin would: each component resolved
(:class:`ComponentRuntime`, :func:`component_runtimes`: its ``.wasm``, mounts, variables with
``{{ variable }}`` resolved as Spin resolves them, triggers) and its ``files`` staged
(:func:`stage_files`).
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from active_data_flow.spin_app.manifest.conventions import TEMPLATE_RE, glob_prefix, inside_path


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

    return TEMPLATE_RE.sub(sub, value)


def component_runtimes(path: str, *, environ: Mapping[str, str] | None = None,
                       overrides: Mapping[str, str] | None = None) -> list[ComponentRuntime]:
    """Every component of the manifest at ``path``, resolved for a local host.

    Run :func:`~active_data_flow.spin_app.manifest.validate.validate_manifest` first for readable errors; this raises ``ValueError``.
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
                mounts.append((os.path.normpath(os.path.join(base, entry)), inside_path(entry)))
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
            prefix = glob_prefix(host)
            for match in glob.glob(host, recursive=True):
                if os.path.isfile(match):
                    dest = os.path.join(target if guest else root, os.path.relpath(match, prefix))
                    os.makedirs(os.path.dirname(dest), exist_ok=True)
                    shutil.copy2(match, dest)
    return root
