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

The commands on the registry are here; ``adf wasm test`` is :mod:`active_data_flow.wasm.cli_run`, what
the commands share :mod:`active_data_flow.wasm.cli_support`.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any

from active_data_flow.wasm.cli_run import cmd_test
from active_data_flow.wasm.cli_support import (
    EXECUTION_HEADER,
    Failure,
    Handler,
    Usage,
    command,
    execution_rows,
    flat,
    open_registry,
    print_json,
    print_record,
    read_input,
    table,
)
from active_data_flow.wasm.errors import ModuleNotFoundInRegistry

__all__ = ["register"]


# --------------------------------------------------------------------------- modules


@command
def _cmd_upload(args: argparse.Namespace) -> int:
    wasm = read_input(args.file, "module file")
    signature = read_input(args.signature, "signature file") if args.signature else None
    reg = open_registry(args)
    rec = reg.upload(args.id, args.version, wasm, permissions=flat(args.allow), signature=signature,
                     author=args.author, description=args.description or "")
    if args.json:
        print_json(rec.to_dict())
    else:
        print_record(rec, f"uploaded {rec.ref}")
    return 0


@command
def _cmd_list(args: argparse.Namespace) -> int:
    records = open_registry(args).list()
    if args.json:
        print_json({"modules": [r.to_dict() for r in records]})
        return 0
    if not records:
        print("no modules registered")
        return 0
    table([[r.id, r.version, "yes" if r.signed else "no", r.author or "", r.size, len(r.permissions),
             r.created_at, r.description] for r in records],
           ("ID", "LATEST", "SIGNED", "AUTHOR", "BYTES", "PERMISSIONS", "CREATED", "DESCRIPTION"))
    return 0


@command
def _cmd_show(args: argparse.Namespace) -> int:
    reg = open_registry(args)
    rec = reg.get(args.ref)
    versions = [r.version for r in reg.versions(rec.id)]
    stats = reg.stats(rec.id)
    runs = reg.query(module_id=rec.id, limit=args.last)
    if args.json:
        print_json({"module": rec.to_dict(), "versions": versions, "stats": stats, "executions": runs})
        return 0
    print_record(rec, f"module {rec.ref}")
    print(f"  versions     {', '.join(versions)}")
    if stats["executions"]:
        print(f"executions: {stats['executions']:,} ({stats['failures']:,} failed), fuel avg "
              f"{stats['avg_fuel']:,.0f} max {stats['max_fuel']:,}, avg {stats['avg_duration_ms']:.1f} ms, "
              f"last {stats['last_run']}")
        print(f"last {len(runs)} execution(s):")
        table(execution_rows(runs), EXECUTION_HEADER)
    else:
        print("executions: none yet")
    return 0


@command
def _cmd_versions(args: argparse.Namespace) -> int:
    records = open_registry(args).versions(args.id)
    if not records:
        raise ModuleNotFoundInRegistry(f"no module {args.id!r} in the registry")
    if args.json:
        print_json({"module_id": args.id, "versions": [r.to_dict() for r in records]})
        return 0
    latest = records[-1].version
    table([[r.version + ("  (latest)" if r.version == latest else ""), r.sha256[:16], r.size,
             "yes" if r.signed else "no", r.created_at] for r in records],
           ("VERSION", "SHA256", "BYTES", "SIGNED", "CREATED"))
    return 0


@command
def _cmd_delete(args: argparse.Namespace) -> int:
    from active_data_flow.wasm.registry import parse_ref

    reg = open_registry(args)
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
            raise Usage(f"refusing to delete {what} without --yes (stdin is not a terminal)")
        try:
            answer = input(f"delete {what} (binary and metadata)? [y/N] ").strip().lower()
        except EOFError:
            answer = ""
        if answer not in ("y", "yes"):
            raise Failure("not deleted")
    reg.delete(args.ref)
    if args.json:
        print_json({"deleted": targets})
    else:
        print(f"deleted {what}")
    return 0


@command
def _cmd_permissions(args: argparse.Namespace) -> int:
    from active_data_flow.wasm.permissions import PermissionSet

    reg = open_registry(args)
    rec = reg.get(args.ref)
    add, remove = flat(args.add), flat(args.remove)
    problems = []
    for label, items in (("--set", flat(args.set)), ("--add", add), ("--remove", remove)):
        try:
            PermissionSet.parse(items)
        except ValueError as exc:
            problems.append(f"{label}: {exc}")
    if problems:
        raise Usage("invalid permissions: " + "; ".join(problems))
    changing = args.set is not None or add or remove
    if changing:
        base = PermissionSet.parse(flat(args.set)) if args.set is not None else rec.permissions
        for p in PermissionSet.parse(remove):
            if str(p) not in base.to_list() and str(p) not in add:
                print(f"adf: warning: {p} was not granted to {rec.ref}", file=sys.stderr)
        rec = reg.set_permissions(rec.ref, base.added(add).removed(remove).to_list())
    perms = rec.permissions.to_list()
    if args.json:
        print_json({"ref": rec.ref, "permissions": perms})
        return 0
    print(f"permissions of {rec.ref}:")
    for p in perms:
        print(f"  {p}")
    if not perms:
        print("  (none)")
    return 0


# --------------------------------------------------------------------------- keys and logs


@command
def _cmd_keys_add(args: argparse.Namespace) -> int:
    from active_data_flow.wasm.registry import public_key_bytes

    data = read_input(args.public_key_file, "public key file")
    try:
        raw = public_key_bytes(data)
    except ValueError as exc:
        raise Usage(f"{args.public_key_file}: {exc}") from None
    reg = open_registry(args)
    reg.add_author_key(args.author, raw)
    import hashlib

    fingerprint = hashlib.sha256(raw).hexdigest()
    if args.json:
        print_json({"author": args.author, "fingerprint": fingerprint})
    else:
        print(f"registered an Ed25519 key for author {args.author} (fingerprint {fingerprint[:16]})")
    return 0


@command
def _cmd_keys_list(args: argparse.Namespace) -> int:
    keys = open_registry(args).author_keys()
    if args.json:
        print_json({"keys": [{k: v for k, v in key.items()} for key in keys]})
        return 0
    if not keys:
        print("no author keys registered")
        return 0
    table([[k["author"], k["fingerprint"][:16], k["added_at"]] for k in keys], ("AUTHOR", "FINGERPRINT", "ADDED"))
    return 0


@command
def _cmd_executions(args: argparse.Namespace) -> int:
    entries = open_registry(args).query(execution_id=args.id, module_id=args.module, limit=args.limit)
    if args.json:
        print_json({"executions": entries})
        return 0
    if not entries:
        print("no executions recorded")
        return 0
    table(execution_rows(entries), EXECUTION_HEADER)
    if args.id:
        for e in entries:
            if e.get("error"):
                print(f"error: {e.get('error_type') or ''}: {e['error']}")
            if e.get("trace"):
                print(e["trace"])
    return 0


@command
def _cmd_alerts(args: argparse.Namespace) -> int:
    alerts = open_registry(args).security_alerts(module_id=args.module, limit=args.limit)
    if args.json:
        print_json({"alerts": alerts})
        return 0
    if not alerts:
        print("no security alerts")
        return 0
    table([[a["ts"], a["kind"], f"{a['module_id'] or ''}@{a['version'] or ''}".strip("@"), a["message"]]
            for a in alerts], ("TS", "KIND", "MODULE", "MESSAGE"))
    return 0


@command
def _cmd_audit(args: argparse.Namespace) -> int:
    events = open_registry(args).audit_log(module_id=args.module, event=args.event, limit=args.limit)
    if args.json:
        print_json({"events": events})
        return 0
    if not events:
        print("no audit events")
        return 0
    table([[e["ts"], e["event"], e["module_id"], e["execution_id"], e["permission"], e["resource"]]
            for e in events], ("TS", "EVENT", "MODULE", "EXECUTION", "PERMISSION", "RESOURCE"))
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

    test = cmd("test", "run a module once with limits and permissions", cmd_test)
    test.add_argument("module", metavar="MODULE", help="a .wasm/.wat file or id@version in the registry")
    test.add_argument("--input", metavar="FILE", help="JSON input ('-': stdin; default {})")
    test.add_argument("--function", default="run", help="exported function (default run)")
    test.add_argument("--fuel", type=int, help="fuel (instructions) for the call")
    test.add_argument("--memory-mb", dest="memory_mb", type=int, help="linear memory cap in MiB")
    test.add_argument("--timeout-ms", dest="timeout_ms", type=int, help="wall-clock limit in milliseconds")
    test.add_argument("--allow", action="extend", nargs="+", metavar="PERM",
                      help="grant a permission for this run (added to a registry module's own)")

    try:
        toolchain: Any = importlib.import_module("active_data_flow.wasm.toolchain")
    except ImportError:
        toolchain = None
    if toolchain is not None:
        toolchain.register(wsub)
