"""``adf wasm …``: the WebAssembly module registry, signing keys, logs and one-off test runs.

Registered through the ``active_data_flow.commands`` entry-point group. Standard library only
at import; the registry (SQLAlchemy, cryptography, wasmtime) and the executor are imported
when a command runs.

=================================================  =============================================
``adf wasm upload FILE.wasm --id ID --version V``  validate, store and register a module
``adf wasm list`` / ``show REF`` / ``versions ID``  what is registered (``show``: stats, last runs)
``adf wasm delete REF [--yes]``                    remove a version (``ID``: every version)
``adf wasm permissions REF [--add|--remove|--set]``  change what a module may do
``adf wasm keys add AUTHOR KEY`` / ``keys list``   Ed25519 public keys of signing authors
``adf wasm executions`` / ``alerts`` / ``audit``   the execution log, security alerts, audit log
``adf wasm test MODULE --input in.json``           run a module once with limits and permissions
=================================================  =============================================

Where the registry is: ``--db URL``, ``--storage URL``, ``--s3-endpoint URL`` (before or after
the sub-command), else ``ADF_WASM_DB_URL``, ``ADF_WASM_STORAGE``, ``ADF_WASM_S3_ENDPOINT``, else
``<state root>/wasm.db`` and ``<state root>/wasm-modules``.

Exit codes: 0 success; 1 a failure (a module run failed or hit a limit, an integrity or
signature check refused a module, the database is unreachable, a deletion was declined);
2 bad usage or input (an invalid module, id, version or permission, a duplicate, an unknown
module, an unreadable file, a missing extra). Errors are one ``adf: …`` line on stderr; with
``--json`` the last stdout line is a JSON object.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from core.errors import ConfigError, MissingExtraError
from core.wasm.errors import (
    ModuleIntegrityError,
    ModuleNotFoundInRegistry,
    SignatureError,
    WasmAbiError,
    WasmError,
    WasmLimitExceeded,
)

__all__ = ["register"]

Handler = Callable[[argparse.Namespace], int]


class _Usage(ValueError):
    """Bad input to a command (exit code 2)."""


class _Failure(RuntimeError):
    """A command that could not do its work (exit code 1)."""


def _err(message: str) -> None:
    print(f"adf: {message}", file=sys.stderr)


def _print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, default=str) + "\n")
    sys.stdout.flush()


def _exit_code(exc: BaseException) -> int:
    """2 for bad usage or input, 1 for failures."""
    if isinstance(exc, SignatureError | ModuleIntegrityError | _Failure):
        return 1
    if isinstance(exc, ModuleNotFoundInRegistry | MissingExtraError | ConfigError | ValueError | _Usage):
        return 2
    return 1


def _command(fn: Handler) -> Handler:
    """Run ``fn``; report an error as one line on stderr (and a JSON object with ``--json``)."""

    @functools.wraps(fn)
    def run(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except KeyboardInterrupt:
            raise
        except Exception as exc:
            code = _exit_code(exc)
            message = str(exc) or type(exc).__name__
            if code == 1 and not isinstance(exc, WasmError | _Failure):
                message = f"{type(exc).__name__}: {message}"
            from core.redact import redact_text

            message = redact_text(message.strip().splitlines()[0] if message.strip() else message)
            if getattr(args, "json", False):
                _print_json({"status": "invalid" if code == 2 else "failed", "error": message})
            _err(message)
            return code

    return run


def _read(path: str, what: str) -> bytes:
    try:
        if path == "-":
            return sys.stdin.buffer.read()
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise _Usage(f"cannot read {what} {path!r}: {exc.strerror or exc}") from None


def _registry(args: argparse.Namespace) -> Any:
    from core.wasm.registry import ModuleRegistry

    return ModuleRegistry(getattr(args, "db", None), getattr(args, "storage", None),
                          endpoint_url=getattr(args, "s3_endpoint", None))


def _flat(values: Sequence[Any] | None) -> list[str]:
    """``--allow a b --allow c`` → ``["a", "b", "c"]``."""
    out: list[str] = []
    for v in values or ():
        if isinstance(v, list | tuple):
            out.extend(str(x) for x in v)
        else:
            out.append(str(v))
    return out


def _table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> None:
    cells = [[str(c) for c in header]] + [["" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for r in cells:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def _size(n: int) -> str:
    return f"{n:,} bytes" if n < 10 * 1024 else f"{n / 1024:,.1f} KiB"


def _print_record(rec: Any, title: str | None = None) -> None:
    d = rec.to_dict()
    if title:
        print(title)
    signed = f"yes (author {d['author']})" if d["signed"] else ("no" + (f" (author {d['author']})" if d["author"] else ""))
    print(f"  ref          {d['ref']}")
    print(f"  sha256       {d['sha256']}")
    print(f"  size         {_size(d['size'])}")
    print(f"  signed       {signed}")
    if d["description"]:
        print(f"  description  {d['description']}")
    print(f"  created      {d['created_at']}")
    print(f"  storage key  {d['storage_key']}")
    perms = d["permissions"]
    print(f"  permissions  {perms[0] if perms else '(none)'}")
    for p in perms[1:]:
        print(f"               {p}")


def _execution_rows(entries: Sequence[dict[str, Any]]) -> list[list[Any]]:
    rows = []
    for e in entries:
        status = "ok" if e["ok"] else (f"{e['limit']} limit" if e.get("limit") else "failed")
        error = (e.get("error") or "").splitlines()[0][:80] if e.get("error") else ""
        rows.append([e["started_at"], e["execution_id"], e["module_id"], e["function"], status,
                     f"{e['fuel_consumed']:,}", f"{e['duration_ms']:.1f}", error])
    return rows


_EXECUTION_HEADER = ("STARTED", "EXECUTION", "MODULE", "FUNCTION", "STATUS", "FUEL", "MS", "ERROR")


# --------------------------------------------------------------------------- modules


@_command
def _cmd_upload(args: argparse.Namespace) -> int:
    wasm = _read(args.file, "module file")
    signature = _read(args.signature, "signature file") if args.signature else None
    reg = _registry(args)
    rec = reg.upload(args.id, args.version, wasm, permissions=_flat(args.allow), signature=signature,
                     author=args.author, description=args.description or "")
    if args.json:
        _print_json(rec.to_dict())
    else:
        _print_record(rec, f"uploaded {rec.ref}")
    return 0


@_command
def _cmd_list(args: argparse.Namespace) -> int:
    records = _registry(args).list()
    if args.json:
        _print_json({"modules": [r.to_dict() for r in records]})
        return 0
    if not records:
        print("no modules registered")
        return 0
    _table([[r.id, r.version, "yes" if r.signed else "no", r.author or "", r.size, len(r.permissions),
             r.created_at, r.description] for r in records],
           ("ID", "LATEST", "SIGNED", "AUTHOR", "BYTES", "PERMISSIONS", "CREATED", "DESCRIPTION"))
    return 0


@_command
def _cmd_show(args: argparse.Namespace) -> int:
    reg = _registry(args)
    rec = reg.get(args.ref)
    versions = [r.version for r in reg.versions(rec.id)]
    stats = reg.stats(rec.id)
    runs = reg.query(module_id=rec.id, limit=args.last)
    if args.json:
        _print_json({"module": rec.to_dict(), "versions": versions, "stats": stats, "executions": runs})
        return 0
    _print_record(rec, f"module {rec.ref}")
    print(f"  versions     {', '.join(versions)}")
    if stats["executions"]:
        print(f"executions: {stats['executions']:,} ({stats['failures']:,} failed), fuel avg "
              f"{stats['avg_fuel']:,.0f} max {stats['max_fuel']:,}, avg {stats['avg_duration_ms']:.1f} ms, "
              f"last {stats['last_run']}")
        print(f"last {len(runs)} execution(s):")
        _table(_execution_rows(runs), _EXECUTION_HEADER)
    else:
        print("executions: none yet")
    return 0


@_command
def _cmd_versions(args: argparse.Namespace) -> int:
    records = _registry(args).versions(args.id)
    if not records:
        raise ModuleNotFoundInRegistry(f"no module {args.id!r} in the registry")
    if args.json:
        _print_json({"module_id": args.id, "versions": [r.to_dict() for r in records]})
        return 0
    latest = records[-1].version
    _table([[r.version + ("  (latest)" if r.version == latest else ""), r.sha256[:16], r.size,
             "yes" if r.signed else "no", r.created_at] for r in records],
           ("VERSION", "SHA256", "BYTES", "SIGNED", "CREATED"))
    return 0


@_command
def _cmd_delete(args: argparse.Namespace) -> int:
    from core.wasm.registry import parse_ref

    reg = _registry(args)
    module_id, _version = parse_ref(args.ref)
    if "@" in args.ref:
        targets = [reg.get(args.ref).ref]
    else:
        targets = [r.ref for r in reg.versions(module_id)]
        if not targets:
            raise ModuleNotFoundInRegistry(f"no module {module_id!r} in the registry")
    what = ", ".join(targets)
    if not args.yes:
        if not sys.stdin.isatty():
            raise _Usage(f"refusing to delete {what} without --yes (stdin is not a terminal)")
        try:
            answer = input(f"delete {what} (binary and metadata)? [y/N] ").strip().lower()
        except EOFError:
            answer = ""
        if answer not in ("y", "yes"):
            raise _Failure("not deleted")
    reg.delete(args.ref)
    if args.json:
        _print_json({"deleted": targets})
    else:
        print(f"deleted {what}")
    return 0


@_command
def _cmd_permissions(args: argparse.Namespace) -> int:
    from core.wasm.permissions import PermissionSet

    reg = _registry(args)
    rec = reg.get(args.ref)
    add, remove = _flat(args.add), _flat(args.remove)
    problems = []
    for label, items in (("--set", _flat(args.set)), ("--add", add), ("--remove", remove)):
        try:
            PermissionSet.parse(items)
        except ValueError as exc:
            problems.append(f"{label}: {exc}")
    if problems:
        raise _Usage("invalid permissions: " + "; ".join(problems))
    changing = args.set is not None or add or remove
    if changing:
        base = PermissionSet.parse(_flat(args.set)) if args.set is not None else rec.permissions
        for p in PermissionSet.parse(remove):
            if str(p) not in base.to_list() and str(p) not in add:
                print(f"adf: warning: {p} was not granted to {rec.ref}", file=sys.stderr)
        rec = reg.set_permissions(rec.ref, base.added(add).removed(remove).to_list())
    perms = rec.permissions.to_list()
    if args.json:
        _print_json({"ref": rec.ref, "permissions": perms})
        return 0
    print(f"permissions of {rec.ref}:")
    for p in perms:
        print(f"  {p}")
    if not perms:
        print("  (none)")
    return 0


# --------------------------------------------------------------------------- keys and logs


@_command
def _cmd_keys_add(args: argparse.Namespace) -> int:
    from core.wasm.registry import public_key_bytes

    data = _read(args.public_key_file, "public key file")
    try:
        raw = public_key_bytes(data)
    except ValueError as exc:
        raise _Usage(f"{args.public_key_file}: {exc}") from None
    reg = _registry(args)
    reg.add_author_key(args.author, raw)
    import hashlib

    fingerprint = hashlib.sha256(raw).hexdigest()
    if args.json:
        _print_json({"author": args.author, "fingerprint": fingerprint})
    else:
        print(f"registered an Ed25519 key for author {args.author} (fingerprint {fingerprint[:16]})")
    return 0


@_command
def _cmd_keys_list(args: argparse.Namespace) -> int:
    keys = _registry(args).author_keys()
    if args.json:
        _print_json({"keys": [{k: v for k, v in key.items()} for key in keys]})
        return 0
    if not keys:
        print("no author keys registered")
        return 0
    _table([[k["author"], k["fingerprint"][:16], k["added_at"]] for k in keys], ("AUTHOR", "FINGERPRINT", "ADDED"))
    return 0


@_command
def _cmd_executions(args: argparse.Namespace) -> int:
    entries = _registry(args).query(execution_id=args.id, module_id=args.module, limit=args.limit)
    if args.json:
        _print_json({"executions": entries})
        return 0
    if not entries:
        print("no executions recorded")
        return 0
    _table(_execution_rows(entries), _EXECUTION_HEADER)
    if args.id:
        for e in entries:
            if e.get("error"):
                print(f"error: {e.get('error_type') or ''}: {e['error']}")
            if e.get("trace"):
                print(e["trace"])
    return 0


@_command
def _cmd_alerts(args: argparse.Namespace) -> int:
    alerts = _registry(args).security_alerts(module_id=args.module, limit=args.limit)
    if args.json:
        _print_json({"alerts": alerts})
        return 0
    if not alerts:
        print("no security alerts")
        return 0
    _table([[a["ts"], a["kind"], f"{a['module_id'] or ''}@{a['version'] or ''}".strip("@"), a["message"]]
            for a in alerts], ("TS", "KIND", "MODULE", "MESSAGE"))
    return 0


@_command
def _cmd_audit(args: argparse.Namespace) -> int:
    events = _registry(args).audit_log(module_id=args.module, event=args.event, limit=args.limit)
    if args.json:
        _print_json({"events": events})
        return 0
    if not events:
        print("no audit events")
        return 0
    _table([[e["ts"], e["event"], e["module_id"], e["execution_id"], e["permission"], e["resource"]]
            for e in events], ("TS", "EVENT", "MODULE", "EXECUTION", "PERMISSION", "RESOURCE"))
    return 0


# --------------------------------------------------------------------------- test


def _test_result(args: argparse.Namespace, *, ok: bool, output: Any = None, fuel: int = 0,
                 error: str | None = None, limit: str | None = None, code: int = 0) -> int:
    if args.json:
        _print_json({"ok": ok, "output": output, "fuel_consumed": fuel, "error": error, "limit": limit})
    if error is not None:
        what = f" [limit: {limit}]" if limit else ""
        _err(f"wasm test failed: {error}{what}; fuel consumed: {fuel:,}")
    return code


def _cmd_test(args: argparse.Namespace) -> int:  # noqa: C901
    from core.redact import redact_text
    from core.wasm.limits import Limits
    from core.wasm.permissions import PermissionSet

    def refuse(message: str, code: int = 2, fuel: int = 0) -> int:
        return _test_result(args, ok=False, error=redact_text(message), fuel=fuel, code=code)

    # -- the input, limits and permissions: bad ones are usage errors
    try:
        if args.input is None:
            payload: Any = {}
        else:
            raw = _read(args.input, "input file")
            try:
                payload = json.loads(raw.decode("utf-8") or "null")
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise _Usage(f"input {args.input!r} is not JSON: {exc}") from None
        limits = Limits.from_mapping({"fuel": args.fuel, "memory_mb": args.memory_mb, "timeout_ms": args.timeout_ms})
        allow = PermissionSet.parse(_flat(args.allow))
    except ConfigError as exc:
        return refuse(f"invalid limits: {'; '.join(exc.problems)}")
    except ValueError as exc:
        return refuse(str(exc) if isinstance(exc, _Usage) else f"invalid permissions: {exc}")

    target = args.module
    is_file = os.path.exists(target) or target.endswith((".wasm", ".wat"))
    if is_file and not os.path.isfile(target):
        return refuse(f"no such module file {target!r}")
    try:
        executor_mod: Any = importlib.import_module("core.wasm.executor")
    except ModuleNotFoundError as exc:
        if exc.name != "core.wasm.executor":
            return refuse(f"the wasm executor needs {exc.name!r}: pip install 'active-data-flow[wasm]'")
        return refuse("the wasm executor (core.wasm.executor) is not available in this installation")
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
                compiled = executor.compile(_read(target, "module file"),
                                            module_id=os.path.splitext(os.path.basename(target))[0])
            permissions = allow
        else:
            registry = _registry(args)
            record = registry.get(target)
            executor = executor_mod.WasmExecutor(registry=registry, execution_log=registry, default_limits=limits)
            compiled = executor.load(record.ref)
            registered = getattr(compiled, "permissions", None) or record.permissions
            permissions = PermissionSet(registered).added(allow)
    except (SignatureError, ModuleIntegrityError) as exc:
        return refuse(str(exc), 1)
    except (WasmAbiError, ModuleNotFoundInRegistry, MissingExtraError, _Usage, ValueError) as exc:
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
        details.append(f"peak memory {_size(int(result.peak_memory_bytes))}")
    if getattr(result, "execution_id", None):
        details.append(f"execution {result.execution_id}")
    print(", ".join(details))
    for line in getattr(result, "logs", None) or ():
        print(f"log: {line}", file=sys.stderr)
    for denial in getattr(result, "denials", None) or ():
        print(f"adf: warning: denied: {denial}", file=sys.stderr)
    return 0


# --------------------------------------------------------------------------- parser


def _location_parent() -> argparse.ArgumentParser:
    """``--db``/``--storage``/``--s3-endpoint`` after a sub-command too (they do not reset the
    values given before it)."""
    p = argparse.ArgumentParser(add_help=False)
    _add_location(p, argparse.SUPPRESS)
    return p


def _add_location(p: argparse.ArgumentParser, default: Any) -> None:
    p.add_argument("--db", default=default, metavar="URL",
                   help="registry database (default $ADF_WASM_DB_URL or sqlite:///<state root>/wasm.db)")
    p.add_argument("--storage", default=default, metavar="URL",
                   help="where binaries live: a directory or s3://bucket/prefix "
                        "(default $ADF_WASM_STORAGE or <state root>/wasm-modules)")
    p.add_argument("--s3-endpoint", dest="s3_endpoint", default=default, metavar="URL",
                   help="S3-compatible endpoint for s3:// storage (default $ADF_WASM_S3_ENDPOINT)")


def register(sub: Any) -> None:
    """Add ``adf wasm …`` to the ``adf`` parser (the ``active_data_flow.commands`` entry point)."""
    wasm = sub.add_parser("wasm", help="WebAssembly modules: registry, signing keys, logs, test runs",
                          description="Register, sign, inspect and test WebAssembly modules "
                                      "(see docs/WASM_REGISTRY.md).")
    _add_location(wasm, None)
    loc = _location_parent()
    wsub = wasm.add_subparsers(dest="wasm_command", required=True)

    def cmd(name: str, help_text: str, func: Handler, json_flag: bool = True) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = wsub.add_parser(name, help=help_text, description=help_text, parents=[loc])
        if json_flag:
            p.add_argument("--json", action="store_true", help="print one JSON object")
        p.set_defaults(func=func)
        return p

    up = cmd("upload", "validate, store and register a module version", _cmd_upload)
    up.add_argument("file", help="the module (.wasm binary)")
    up.add_argument("--id", required=True, help="module id: [a-z0-9][a-z0-9_.-]*")
    up.add_argument("--version", required=True, help="semantic version, e.g. 1.2.0 or 2.0.0-rc.1")
    up.add_argument("--allow", action="extend", nargs="+", metavar="PERM",
                    help="grant a permission, e.g. http:read:https://api.example.com/* (repeatable)")
    up.add_argument("--signature", metavar="FILE", help="Ed25519 signature of the .wasm bytes (raw or base64)")
    up.add_argument("--author", help="who signed it (their key must be registered: adf wasm keys add)")
    up.add_argument("--description", help="a line about the module")

    cmd("list", "the newest version of every module", _cmd_list)

    show = cmd("show", "a module: record, permissions, execution stats, last executions", _cmd_show)
    show.add_argument("ref", help="id@version, id@latest or id")
    show.add_argument("--last", type=int, default=5, metavar="N", help="how many executions to show (default 5)")

    ver = cmd("versions", "every version of a module, oldest first", _cmd_versions)
    ver.add_argument("id")

    dele = cmd("delete", "remove a module version (ID alone: every version)", _cmd_delete)
    dele.add_argument("ref", help="id@version, id@latest or id (every version)")
    dele.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")

    perm = cmd("permissions", "show or change a module's permissions", _cmd_permissions)
    perm.add_argument("ref", help="id@version or id (the newest version)")
    perm.add_argument("--add", action="extend", nargs="+", metavar="PERM", help="grant (repeatable)")
    perm.add_argument("--remove", action="extend", nargs="+", metavar="PERM", help="revoke (repeatable)")
    perm.add_argument("--set", action="extend", nargs="*", metavar="PERM",
                      help="replace all permissions (--set alone: none)")

    keys = wsub.add_parser("keys", help="Ed25519 public keys of the authors who sign modules")
    ksub = keys.add_subparsers(dest="keys_command", required=True)
    kadd = ksub.add_parser("add", help="register an author's public key (PEM, raw 32 bytes or base64)",
                           parents=[loc])
    kadd.add_argument("author")
    kadd.add_argument("public_key_file", metavar="PUBLIC_KEY_FILE")
    kadd.add_argument("--json", action="store_true")
    kadd.set_defaults(func=_cmd_keys_add)
    klist = ksub.add_parser("list", help="registered keys", parents=[loc])
    klist.add_argument("--json", action="store_true")
    klist.set_defaults(func=_cmd_keys_list)

    exe = cmd("executions", "the execution log, newest first", _cmd_executions)
    exe.add_argument("--module", metavar="ID")
    exe.add_argument("--id", metavar="EXECUTION_ID")
    exe.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")

    al = cmd("alerts", "security alerts: refused signatures, tampered or missing binaries", _cmd_alerts)
    al.add_argument("--module", metavar="ID")
    al.add_argument("--limit", type=int, default=100)

    au = cmd("audit", "the audit log of host calls (permission denials) and permission changes", _cmd_audit)
    au.add_argument("--module", metavar="ID")
    au.add_argument("--event", help="only this event, e.g. permission_denied")
    au.add_argument("--limit", type=int, default=100)

    test = cmd("test", "run a module once with limits and permissions", _cmd_test)
    test.add_argument("module", metavar="MODULE", help="a .wasm/.wat file or id@version in the registry")
    test.add_argument("--input", metavar="FILE", help="JSON input ('-': stdin; default {})")
    test.add_argument("--function", default="run", help="exported function (default run)")
    test.add_argument("--fuel", type=int, help="fuel (instructions) for the call")
    test.add_argument("--memory-mb", dest="memory_mb", type=int, help="linear memory cap in MiB")
    test.add_argument("--timeout-ms", dest="timeout_ms", type=int, help="wall-clock limit in milliseconds")
    test.add_argument("--allow", action="extend", nargs="+", metavar="PERM",
                      help="grant a permission for this run (added to a registry module's own)")

    try:
        toolchain: Any = importlib.import_module("core.wasm.toolchain")
    except ImportError:
        toolchain = None
    if toolchain is not None:
        toolchain.register(wsub)
