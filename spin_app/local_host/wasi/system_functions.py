"""The ``wasi:cli``, ``wasi:clocks`` and ``wasi:random`` host functions."""

from __future__ import annotations

import os
import secrets
import time
from typing import Any

from active_data_flow.spin_app.local_host.wasi.state import Handles, HostFunctions
from active_data_flow.spin_app.local_host.wasi.streams import InputStream, OutputStream, Pollable
from active_data_flow.spin_app.local_host.wasi.values import Err, WasiTrap

__all__ = ["cli_functions", "clock_functions", "random_functions"]


def _exit(s: Any, status: Any) -> None:
    raise WasiTrap(f"the component exited ({'success' if not isinstance(status, Err) else 'failure'})")


def cli_functions(f: HostFunctions, handles: Handles) -> None:
    """Add ``wasi:cli`` (environment, arguments, exit, the standard streams, no terminal) to ``f``."""
    own, st = handles.own, handles.state
    f["wasi:cli/environment#get-environment"] = lambda s: [(k, v) for k, v in st().env.items()]
    f["wasi:cli/environment#get-arguments"] = lambda s: list(st().args)
    f["wasi:cli/environment#initial-cwd"] = lambda s: None
    f["wasi:cli/exit#exit"] = _exit
    f["wasi:cli/stdin#get-stdin"] = lambda s: own("wasi:cli/stdin", "input-stream", InputStream())
    f["wasi:cli/stdout#get-stdout"] = lambda s: own("wasi:cli/stdout", "output-stream", OutputStream(st().stdout))
    f["wasi:cli/stderr#get-stderr"] = lambda s: own("wasi:cli/stderr", "output-stream", OutputStream(st().stderr))
    for which in ("stdin", "stdout", "stderr"):
        f[f"wasi:cli/terminal-{which}#get-terminal-{which}"] = lambda s: None


def _until(deadline_ns: int) -> Pollable:
    return Pollable(lambda: time.monotonic_ns() >= deadline_ns,
                    lambda: time.sleep(max(0.0, (deadline_ns - time.monotonic_ns()) / 1e9)))


def _wall_now(s: Any) -> dict[str, int]:
    ns = time.time_ns()
    return {"seconds": ns // 1_000_000_000, "nanoseconds": ns % 1_000_000_000}


def clock_functions(f: HostFunctions, handles: Handles) -> None:
    """Add ``wasi:clocks`` (the monotonic clock and its timers, the wall clock) to ``f``."""
    own = handles.own
    f["wasi:clocks/monotonic-clock#now"] = lambda s: time.monotonic_ns()
    f["wasi:clocks/monotonic-clock#resolution"] = lambda s: 1
    f["wasi:clocks/monotonic-clock#subscribe-instant"] = lambda s, when: own(
        "wasi:clocks/monotonic-clock", "pollable", _until(int(when)))
    f["wasi:clocks/monotonic-clock#subscribe-duration"] = lambda s, d: own(
        "wasi:clocks/monotonic-clock", "pollable", _until(time.monotonic_ns() + int(d)))
    f["wasi:clocks/wall-clock#now"] = _wall_now
    f["wasi:clocks/wall-clock#resolution"] = lambda s: {"seconds": 0, "nanoseconds": 1}


def random_functions(f: HostFunctions) -> None:
    """Add ``wasi:random`` (secure, insecure, the insecure seed) to ``f``."""
    f["wasi:random/random#get-random-bytes"] = lambda s, n: secrets.token_bytes(int(n))
    f["wasi:random/random#get-random-u64"] = lambda s: secrets.randbits(64)
    f["wasi:random/insecure#get-insecure-random-bytes"] = lambda s, n: os.urandom(int(n))
    f["wasi:random/insecure#get-insecure-random-u64"] = lambda s: secrets.randbits(64)
    f["wasi:random/insecure-seed#insecure-seed"] = lambda s: (secrets.randbits(64), secrets.randbits(64))
