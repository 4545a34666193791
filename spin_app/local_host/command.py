"""The local host's command line (``python -m active_data_flow.spin_app.host``): serve an HTTP component, deliver
cron ticks, subscribe to Redis or MQTT, or deliver one message."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from active_data_flow.spin_app.engine import EngineSettings
from active_data_flow.spin_app.local_host.component import ComponentHost
from active_data_flow.spin_app.local_host.http_server import ROOT, HttpHost
from active_data_flow.spin_app.local_host.state import SpinState, load_variables
from active_data_flow.spin_app.local_host.triggers import report, serve_http, serve_mqtt, serve_redis

__all__ = ["main"]


def _pairs(items: Sequence[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"expected NAME=VALUE, got {item!r}")
        out[key] = value
    return out


def _component_host(args: argparse.Namespace) -> ComponentHost:
    state = SpinState(args.state_dir, load_variables(_pairs(args.var), args.vars_file))
    dirs = {}
    for d in args.dir or []:
        host_dir, _, guest = d.partition(":")
        dirs[os.path.abspath(host_dir)] = guest or "/"
    return ComponentHost(args.component, state=state, env=_pairs(args.env), dirs=dirs, echo_stdout=True,
                         deferred_reset=not args.spin_like)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m active_data_flow.spin_app.host", description="Run built Spin components locally.")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("component", help="the built .wasm")
        p.add_argument("--state-dir", default=".spin", help="key-value and SQLite files (default .spin)")
        p.add_argument("--var", action="append", help="a Spin variable NAME=VALUE (repeatable)")
        p.add_argument("--vars-file", help="Spin variables from a JSON object")
        p.add_argument("--env", action="append", help="an environment variable of the component NAME=VALUE")
        p.add_argument("--dir", action="append", help="mount HOST[:GUEST] (like the manifest's files)")
        p.add_argument("--spin-like", action="store_true",
                       help="drop each finished instance before the next event, as Spin does (default: after the "
                            "answer, on a thread of its own)")

    p = sub.add_parser("serve", help="serve an HTTP component (wasmtime, or Node: jco + preview2-shim)")
    common(p)
    p.add_argument("--port", type=int, default=3000)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--engine", choices=("wasmtime", "node"), default="wasmtime",
                   help="wasmtime (default: Spin's engine, in this process) or node (jco; logs memory sizes)")
    p.add_argument("--reuse-instance", action="store_true", help="one instance for all requests (not Spin's semantics)")
    p = sub.add_parser("cron", help="deliver cron ticks to a cron component")
    common(p)
    p.add_argument("--every", type=float, default=None, help="seconds between ticks (default: one tick)")
    p.add_argument("--count", type=int, default=None, help="stop after N ticks")
    p = sub.add_parser("redis", help="subscribe to a Redis channel and deliver its messages")
    common(p)
    p.add_argument("--channel", required=True)
    p.add_argument("--address", default="redis://127.0.0.1:6379")
    p.add_argument("--count", type=int, default=None, help="stop after N messages")
    p = sub.add_parser("mqtt", help="subscribe to an MQTT topic and deliver its messages")
    common(p)
    p.add_argument("--topic", required=True)
    p.add_argument("--address", default="mqtt://127.0.0.1:1883")
    p.add_argument("--qos", type=int, default=1)
    p.add_argument("--count", type=int, default=None, help="stop after N messages")
    p = sub.add_parser("message", help="deliver one message to a Redis or MQTT component")
    common(p)
    p.add_argument("--topic", help="MQTT topic (MQTT components)")
    p.add_argument("--payload", required=True, help="the message (text; @FILE reads a file)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        EngineSettings.from_env()
    except ValueError as exc:  # a SPIN_WASMTIME_* variable that Spin would refuse too
        print(f"active_data_flow.spin_app.host: {exc}", file=sys.stderr)
        return 2

    if args.command == "serve":
        http = HttpHost(
            args.component, port=args.port, host=args.host, state_dir=args.state_dir,
            variables=load_variables(_pairs(args.var), args.vars_file), env=_pairs(args.env),
            dirs={os.path.abspath(d.partition(":")[0]): d.partition(":")[2] or "/" for d in args.dir or []},
            reuse_instance=args.reuse_instance, engine=args.engine, deferred_reset=not args.spin_like,
        )
        if args.engine == "node":
            return subprocess.call(http.command(), cwd=str(ROOT))
        return serve_http(http)

    host = _component_host(args)
    try:
        if args.command == "cron":
            n = 0
            while True:
                report("cron", lambda: host.cron())
                n += 1
                if args.every is None or (args.count is not None and n >= args.count):
                    return 0
                time.sleep(args.every)
        if args.command == "message":
            payload = Path(args.payload[1:]).read_bytes() if args.payload.startswith("@") else args.payload.encode()
            ok = report("message", (lambda: host.mqtt(payload, args.topic)) if args.topic else (lambda: host.redis(payload)))
            return 0 if ok else 1
        if args.command == "redis":
            return serve_redis(host, args.address, args.channel, args.count)
        if args.command == "mqtt":
            return serve_mqtt(host, args.address, args.topic, args.qos, args.count)
    finally:
        host.close()
    return 2

