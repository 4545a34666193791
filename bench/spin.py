"""Spin components: size (raw / stripped), time to first response, per-request latency.

    .venv/bin/python bench/spin.py [--requests 200] [--out build/bench-spin]

Builds the HTTP and MQTT components for one small flow (payload → filter → response), serves
HTTP under the local wasmtime host (a fresh instance per request, as Spin does) in two modes,
side by side:

* *host mode* — the host's engine settings (the pooling allocator, keep-resident 32 MiB:
  ``spin_app/engine.py``), a finished instance's slot reset on a thread of its own after the
  answer went out (``deferred_reset=True``), so the next request starts on a warm slot;
* *Spin-like* — each instance dropped where it ran, before the next request is taken
  (``deferred_reset=False``, as Spin drops an instance at the end of its request), with
  Spin's default settings (keep-resident 2 MiB: any Spin 3) and with
  ``SPIN_WASMTIME_LINEAR_MEMORY_KEEP_RESIDENT=33554432`` (the tuning ``adf spin up`` passes;
  the ``*_KEEP_RESIDENT`` variables exist from Spin 3.3 on, spinframework/spin#3065);

and, for comparison, on-demand allocation and the Node host (fresh, and with
``--reuse-instance``); delivers MQTT messages in both modes, and runs the same flow natively
(``run_flow(persist=False)`` in this process) as the baseline.
HTTP latency is measured as HTTP load generators (wrk, hey, oha) measure it: requests one
after another over a kept-alive connection; the same with a new connection per request
(``urllib``: TCP connect + a server thread per connection) is printed beside it.
Targets: stripped size ≤ 20 MB, HTTP p50 ≤ 10 ms.
"""

from __future__ import annotations

import argparse
import http.client
import json
import shutil
import statistics
import sys
import time
import urllib.parse
import urllib.request
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FLOW = {"name": "small", "source": {"type": "payload"},
        "steps": [{"type": "filter", "field": "n", "op": "lt", "value": 50}], "sink": {"type": "response"}}
BODY = json.dumps({"records": [{"n": i, "s": "x" * 20} for i in range(20)]}).encode()


#: the first Spin release that reads SPIN_WASMTIME_LINEAR_MEMORY_KEEP_RESIDENT and
#: SPIN_WASMTIME_TABLE_KEEP_RESIDENT (spinframework/spin#3065, merged 2025-03-31; before it
#: Spin's keep-resident sizes were fixed at 2 MiB / 512 KiB)
KEEP_RESIDENT_SINCE = "3.3"


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


def http_latencies(url: str, n: int) -> list[float]:
    """``n`` POSTs one after another over one kept-alive connection (as load generators do)."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
    out = []
    try:
        for _ in range(n):
            t0 = time.perf_counter()
            conn.request("POST", "/flows/small/run", body=BODY, headers={"content-type": "application/json"})
            resp = conn.getresponse()
            resp.read()
            out.append((time.perf_counter() - t0) * 1000)
            if resp.status != 200:
                raise RuntimeError(f"the component answered {resp.status}")
    finally:
        conn.close()
    return out


def http_latencies_new_connection(url: str, n: int) -> list[float]:
    """The same with a new connection per request."""
    out = []
    for _ in range(n):
        req = urllib.request.Request(url + "/flows/small/run", data=BODY, method="POST")
        t0 = time.perf_counter()
        with urllib.request.urlopen(req, timeout=30) as resp:
            resp.read()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def _describe(settings: Any) -> str:
    if not settings.pooling:
        return "on-demand allocation"
    return f"pooling allocator, keep-resident {settings.keep_resident / (1 << 20):.0f} MiB"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--out", default=str(ROOT / "build" / "bench-spin"))
    args = parser.parse_args()
    from active_data_flow.connectors.memory import ResponseSink
    from active_data_flow.engine import run_flow
    from active_data_flow.spin_app.build import build
    from active_data_flow.spin_app.engine import EngineSettings, MiB
    from active_data_flow.spin_app.host import ComponentHost, HttpHost, SpinState
    from active_data_flow.spin_app.strip import strip_file

    out = Path(args.out)
    report: dict[str, dict[str, float]] = {}
    t0 = time.perf_counter()
    paths = build(out, triggers=("http", "mqtt"), flows=[FLOW], routes={"mqtt": {"bench/in": "small"}}, strip=False,
                  report=report)
    build_s = time.perf_counter() - t0
    sizes = {}
    for kind, path in paths.items():
        raw, stripped = strip_file(path)
        sizes[kind] = (raw, stripped)
    print(f"build (2 components, 2 at a time): {build_s:.1f} s")
    for kind, (raw, stripped) in sizes.items():
        print(f"{kind}.wasm: {raw / 1e6:.1f} MB raw, {stripped / 1e6:.1f} MB stripped (target <= 20 MB)")

    # native baseline: the same flow, same records, in this process
    records = json.loads(BODY)["records"]
    native = []
    for _ in range(args.requests):
        spec = dict(FLOW, source={"type": "memory", "records": records})
        t = time.perf_counter()
        s = run_flow(spec, persist=False)
        ResponseSink.pop(s.run_id)
        native.append((time.perf_counter() - t) * 1000)
    print(f"native run_flow: p50 {pct(native, 50):.2f} ms, p95 {pct(native, 95):.2f} ms")

    state = out / "state"
    shutil.rmtree(state, ignore_errors=True)
    host_default = EngineSettings.from_env()
    spin_default = replace(host_default, keep_resident=2 * MiB)
    print(f"note: Spin reads SPIN_WASMTIME_LINEAR_MEMORY_KEEP_RESIDENT / SPIN_WASMTIME_TABLE_KEEP_RESIDENT from "
          f"Spin {KEEP_RESIDENT_SINCE} on (spinframework/spin#3065); an older Spin always keeps 2 MiB")
    # (engine, reuse, settings, deferred reset, label, key for the comparison)
    runs: list[tuple[str, bool, EngineSettings | None, bool, str, str]] = [
        ("wasmtime", False, host_default, True, f"host mode: {_describe(host_default)}, slot reset after the answer",
         "host"),
        ("wasmtime", False, spin_default, False, "Spin-like: Spin's default keep-resident (2 MiB, any Spin 3), "
         "instance dropped before the next request", "spin"),
        ("wasmtime", False, host_default, False, f"Spin-like, tuned: keep-resident 32 MiB "
         f"(SPIN_WASMTIME_LINEAR_MEMORY_KEEP_RESIDENT, Spin >= {KEEP_RESIDENT_SINCE}), instance dropped before the "
         "next request", "spin-tuned"),
        ("wasmtime", False, spin_default, True, "Spin's default keep-resident (2 MiB), slot reset after the answer", ""),
        ("wasmtime", False, replace(host_default, pooling=False), True, "on-demand allocation (no pool)", ""),
        ("node", False, None, True, "", ""),
        ("node", True, None, True, "", ""),
    ]
    p50s: dict[str, float] = {}
    for engine, reuse, settings, deferred, label, key in runs:
        t = time.perf_counter()
        with HttpHost(paths["http"], state_dir=str(state), reuse_instance=reuse, engine=engine,
                      engine_settings=settings, deferred_reset=deferred) as host:
            first = http_latencies(host.url, 1)[0]
            ttfr = (time.perf_counter() - t) * 1000
            lat = http_latencies(host.url, args.requests)
            fresh = http_latencies_new_connection(host.url, args.requests)
            time.sleep(0.2)
            memory = [json.loads(x)["memory_bytes"] for x in host.output if '"logger":"spin.host"' in x]
        mode = "one instance for all requests" if reuse else "fresh instance per request (as Spin)"
        mode += f", {label}" if label else ""
        mem = [m for m in memory if m]
        if key:
            p50s[key] = pct(lat, 50)
        print(f"HTTP under the {engine} host, {mode}: time to first response {ttfr:.0f} ms (first request "
              f"{first:.1f} ms), p50 {pct(lat, 50):.2f} ms, p95 {pct(lat, 95):.2f} ms, p50 / native p50 = "
              f"{pct(lat, 50) / pct(native, 50):.1f}x (target p50 <= 10 ms); a new connection per request: "
              f"p50 {pct(fresh, 50):.2f} ms, p95 {pct(fresh, 95):.2f} ms"
              + (f"; wasm memory after a request {pct(mem, 50) / 1e6:.1f} MB (p50 of the host's log lines)" if mem else ""))

    if {"host", "spin", "spin-tuned"} <= set(p50s):
        print(f"HTTP p50, Spin-like / host mode: {p50s['spin'] / p50s['host']:.2f}x with Spin's default "
              f"keep-resident ({p50s['spin']:.2f} vs {p50s['host']:.2f} ms), {p50s['spin-tuned'] / p50s['host']:.2f}x "
              f"tuned (keep-resident 32 MiB, Spin >= {KEEP_RESIDENT_SINCE}: {p50s['spin-tuned']:.2f} ms)")

    # MQTT: a message delivered straight to handle-message (no broker), both modes
    mqtt_runs = [("host mode", host_default, True, "host"), ("Spin-like", spin_default, False, "spin"),
                 (f"Spin-like, tuned (Spin >= {KEEP_RESIDENT_SINCE})", host_default, False, "spin-tuned")]
    mqtt_p50: dict[str, float] = {}
    for label, settings, deferred, key in mqtt_runs:
        t = time.perf_counter()
        mqtt = ComponentHost(paths["mqtt"], state=SpinState(str(state)), engine_settings=settings,
                             deferred_reset=deferred)
        mqtt.mqtt(BODY, "bench/in")
        ttfr = (time.perf_counter() - t) * 1000
        lat = []
        for _ in range(args.requests):
            t = time.perf_counter()
            mqtt.mqtt(BODY, "bench/in")
            lat.append((time.perf_counter() - t) * 1000)
        mqtt.close()
        mqtt_p50[key] = pct(lat, 50)
        print(f"MQTT under the wasmtime host, {label} (fresh instance per message, {_describe(mqtt.engine_settings)}): "
              f"first message {ttfr:.0f} ms (incl. compile or cache load), p50 {pct(lat, 50):.2f} ms, "
              f"p95 {pct(lat, 95):.2f} ms, p50 / native p50 = {pct(lat, 50) / pct(native, 50):.1f}x")
    print(f"MQTT p50, Spin-like / host mode: {mqtt_p50['spin'] / mqtt_p50['host']:.2f}x with Spin's default "
          f"keep-resident, {mqtt_p50['spin-tuned'] / mqtt_p50['host']:.2f}x tuned")
    print(f"mean native {statistics.mean(native):.2f} ms over {args.requests} runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
