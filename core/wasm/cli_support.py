"""What the ``adf wasm`` commands share: errors and exit codes, reading files, opening the
registry, and printing tables, records and JSON.

:func:`command` wraps a command so that an error is one ``adf: …`` line on stderr (and a JSON
object with ``--json``) and an exit code: 2 for bad usage or input (:class:`Usage`), 1 for a
failure (:class:`Failure`).
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from active_data_flow.errors import ConfigError, MissingExtraError
from active_data_flow.wasm.errors import (
    ModuleIntegrityError,
    ModuleNotFoundInRegistry,
    SignatureError,
    WasmError,
)

__all__ = [
    "EXECUTION_HEADER",
    "Failure",
    "Handler",
    "Usage",
    "command",
    "err",
    "execution_rows",
    "exit_code",
    "flat",
    "open_registry",
    "print_json",
    "print_record",
    "read_input",
    "size_text",
    "table",
]

#: a command: the parsed arguments -> the exit code
Handler = Callable[[argparse.Namespace], int]


class Usage(ValueError):
    """Bad input to a command (exit code 2)."""


class Failure(RuntimeError):
    """A command that could not do its work (exit code 1)."""


def err(message: str) -> None:
    """One ``adf: …`` line on stderr."""
    print(f"adf: {message}", file=sys.stderr)


def print_json(obj: Any) -> None:
    """One JSON line on stdout."""
    sys.stdout.write(json.dumps(obj, default=str) + "\n")
    sys.stdout.flush()


def exit_code(exc: BaseException) -> int:
    """2 for bad usage or input, 1 for failures."""
    if isinstance(exc, SignatureError | ModuleIntegrityError | Failure):
        return 1
    if isinstance(exc, ModuleNotFoundInRegistry | MissingExtraError | ConfigError | ValueError | Usage):
        return 2
    return 1


def command(fn: Handler) -> Handler:
    """Run ``fn``; report an error as one line on stderr (and a JSON object with ``--json``)."""

    @functools.wraps(fn)
    def run(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except KeyboardInterrupt:
            raise
        except Exception as exc:
            code = exit_code(exc)
            message = str(exc) or type(exc).__name__
            if code == 1 and not isinstance(exc, WasmError | Failure):
                message = f"{type(exc).__name__}: {message}"
            from active_data_flow.redact import redact_text

            message = redact_text(message.strip().splitlines()[0] if message.strip() else message)
            if getattr(args, "json", False):
                print_json({"status": "invalid" if code == 2 else "failed", "error": message})
            err(message)
            return code

    return run


def read_input(path: str, what: str) -> bytes:
    """The bytes of ``path`` (``-``: stdin); :class:`Usage` when it cannot be read."""
    try:
        if path == "-":
            return sys.stdin.buffer.read()
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise Usage(f"cannot read {what} {path!r}: {exc.strerror or exc}") from None


def open_registry(args: argparse.Namespace) -> Any:
    """The module registry at ``--db`` / ``--storage`` / ``--s3-endpoint`` (else the environment)."""
    from active_data_flow.wasm.registry import ModuleRegistry

    return ModuleRegistry(getattr(args, "db", None), getattr(args, "storage", None),
                          endpoint_url=getattr(args, "s3_endpoint", None))


def flat(values: Sequence[Any] | None) -> list[str]:
    """``--allow a b --allow c`` → ``["a", "b", "c"]``."""
    out: list[str] = []
    for v in values or ():
        if isinstance(v, list | tuple):
            out.extend(str(x) for x in v)
        else:
            out.append(str(v))
    return out


def table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> None:
    """Print ``rows`` as aligned columns under ``header``."""
    cells = [[str(c) for c in header]] + [["" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for r in cells:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def size_text(n: int) -> str:
    """``512 bytes`` / ``12.5 KiB``."""
    return f"{n:,} bytes" if n < 10 * 1024 else f"{n / 1024:,.1f} KiB"


def print_record(rec: Any, title: str | None = None) -> None:
    """Print a :class:`~active_data_flow.wasm.registry.ModuleRecord`, one field a line."""
    d = rec.to_dict()
    if title:
        print(title)
    signed = f"yes (author {d['author']})" if d["signed"] else ("no" + (f" (author {d['author']})" if d["author"] else ""))
    print(f"  ref          {d['ref']}")
    print(f"  sha256       {d['sha256']}")
    print(f"  size         {size_text(d['size'])}")
    print(f"  signed       {signed}")
    if d["description"]:
        print(f"  description  {d['description']}")
    print(f"  created      {d['created_at']}")
    print(f"  storage key  {d['storage_key']}")
    perms = d["permissions"]
    print(f"  permissions  {perms[0] if perms else '(none)'}")
    for p in perms[1:]:
        print(f"               {p}")


def execution_rows(entries: Sequence[dict[str, Any]]) -> list[list[Any]]:
    """Execution-log entries as rows under :data:`EXECUTION_HEADER`."""
    rows = []
    for e in entries:
        status = "ok" if e["ok"] else (f"{e['limit']} limit" if e.get("limit") else "failed")
        error = (e.get("error") or "").splitlines()[0][:80] if e.get("error") else ""
        rows.append([e["started_at"], e["execution_id"], e["module_id"], e["function"], status,
                     f"{e['fuel_consumed']:,}", f"{e['duration_ms']:.1f}", error])
    return rows


EXECUTION_HEADER = ("STARTED", "EXECUTION", "MODULE", "FUNCTION", "STATUS", "FUEL", "MS", "ERROR")
