"""``adf wasm test MODULE``: run a module once, from a file or the registry, with limits and
permissions, and print its output (or the error, the limit hit and the fuel consumed).

The executor is imported when the command runs.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from typing import Any

from active_data_flow.errors import ConfigError, MissingExtraError
from active_data_flow.wasm.cli_support import (
    Usage,
    err,
    flat,
    open_registry,
    print_json,
    read_input,
    size_text,
)
from active_data_flow.wasm.errors import (
    ModuleIntegrityError,
    ModuleNotFoundInRegistry,
    SignatureError,
    WasmAbiError,
    WasmError,
    WasmLimitExceeded,
)

__all__ = ["cmd_test"]


def _test_result(args: argparse.Namespace, *, ok: bool, output: Any = None, fuel: int = 0,
                 error: str | None = None, limit: str | None = None, code: int = 0) -> int:
    if args.json:
        print_json({"ok": ok, "output": output, "fuel_consumed": fuel, "error": error, "limit": limit})
    if error is not None:
        what = f" [limit: {limit}]" if limit else ""
        err(f"wasm test failed: {error}{what}; fuel consumed: {fuel:,}")
    return code


def cmd_test(args: argparse.Namespace) -> int:  # noqa: C901
    from active_data_flow.redact import redact_text
    from active_data_flow.wasm.limits import Limits
    from active_data_flow.wasm.permissions import PermissionSet

    def refuse(message: str, code: int = 2, fuel: int = 0) -> int:
        return _test_result(args, ok=False, error=redact_text(message), fuel=fuel, code=code)

    # -- the input, limits and permissions: bad ones are usage errors
    try:
        if args.input is None:
            payload: Any = {}
        else:
            raw = read_input(args.input, "input file")
            try:
                payload = json.loads(raw.decode("utf-8") or "null")
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise Usage(f"input {args.input!r} is not JSON: {exc}") from None
        limits = Limits.from_mapping({"fuel": args.fuel, "memory_mb": args.memory_mb, "timeout_ms": args.timeout_ms})
        allow = PermissionSet.parse(flat(args.allow))
    except ConfigError as exc:
        return refuse(f"invalid limits: {'; '.join(exc.problems)}")
    except ValueError as exc:
        return refuse(str(exc) if isinstance(exc, Usage) else f"invalid permissions: {exc}")

    target = args.module
    is_file = os.path.exists(target) or target.endswith((".wasm", ".wat"))
    if is_file and not os.path.isfile(target):
        return refuse(f"no such module file {target!r}")
    try:
        executor_mod: Any = importlib.import_module("active_data_flow.wasm.executor")
    except ModuleNotFoundError as exc:
        if exc.name != "active_data_flow.wasm.executor":
            return refuse(f"the wasm executor needs {exc.name!r}: pip install 'active-data-flow[wasm]'")
        return refuse("the wasm executor (active_data_flow.wasm.executor) is not available in this installation")
    except ImportError as exc:
        return refuse(f"the wasm executor cannot be imported: {exc}")

    # -- load: a file, or id@version from the registry
    registry: Any = None
    try:
        if is_file:
            executor = executor_mod.WasmExecutor(default_limits=limits)
            if target.endswith((".wasm", ".wat")):
                compiled = executor.load(target)
            else:
                compiled = executor.compile(read_input(target, "module file"),
                                            module_id=os.path.splitext(os.path.basename(target))[0])
            permissions = allow
        else:
            registry = open_registry(args)
            record = registry.get(target)
            executor = executor_mod.WasmExecutor(registry=registry, execution_log=registry, default_limits=limits)
            compiled = executor.load(record.ref)
            registered = getattr(compiled, "permissions", None) or record.permissions
            permissions = PermissionSet(registered).added(allow)
    except (SignatureError, ModuleIntegrityError) as exc:
        return refuse(str(exc), 1)
    except (WasmAbiError, ModuleNotFoundInRegistry, MissingExtraError, Usage, ValueError) as exc:
        return refuse(str(exc) or type(exc).__name__)
    except WasmError as exc:
        return refuse(str(exc), 1)
    except Exception as exc:
        return refuse(f"{type(exc).__name__}: {exc}", 1)

    module_id = str(getattr(compiled, "module_id", "") or (record.ref if registry is not None else target))
    host = executor_mod.HostContext(module_id=module_id, permissions=permissions,
                                    audit=registry.audit if registry is not None else None)
    # -- run once
    try:
        result = executor.call(compiled, payload, function=args.function, limits=limits, host=host)
    except WasmLimitExceeded as exc:
        return _test_result(args, ok=False, fuel=int(exc.fuel_consumed or 0), error=redact_text(str(exc)),
                            limit=exc.kind, code=1)
    except WasmError as exc:
        return _test_result(args, ok=False, fuel=int(exc.fuel_consumed or 0), error=redact_text(str(exc)), code=1)
    except Exception as exc:
        return _test_result(args, ok=False, error=redact_text(f"{type(exc).__name__}: {exc}"), code=1)

    fuel = int(getattr(result, "fuel_consumed", 0) or 0)
    output = result.output
    if args.json:
        return _test_result(args, ok=True, output=output, fuel=fuel)
    print(json.dumps(output, indent=2, default=str))
    details = [f"fuel consumed: {fuel:,}"]
    if getattr(result, "duration_ms", None) is not None:
        details.append(f"{float(result.duration_ms):.1f} ms")
    if getattr(result, "peak_memory_bytes", None):
        details.append(f"peak memory {size_text(int(result.peak_memory_bytes))}")
    if getattr(result, "execution_id", None):
        details.append(f"execution {result.execution_id}")
    print(", ".join(details))
    for line in getattr(result, "logs", None) or ():
        print(f"log: {line}", file=sys.stderr)
    for denial in getattr(result, "denials", None) or ():
        print(f"adf: warning: denied: {denial}", file=sys.stderr)
    return 0
