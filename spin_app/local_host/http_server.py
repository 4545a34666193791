"""The HTTP trigger of the local host: serving an HTTP component.

:class:`WasmtimeHttpServer` serves it in this process with wasmtime (a fresh instance per
request, WASI in Python); :class:`HttpHost` starts, waits for and stops either that server or
the Node host in ``scripts/spin_host/serve.mjs`` (jco + preview2-shim), which also logs each
instance's memory size.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from active_data_flow.spin_app.engine import EngineSettings
from active_data_flow.spin_app.local_host.component import ComponentHost, GuestError
from active_data_flow.spin_app.local_host.state import SpinState, load_variables
from active_data_flow.spin_app.local_host.wasi.http_types import IncomingRequest
from active_data_flow.spin_app.local_host.wasi.values import Err

__all__ = ["ROOT", "SERVE_JS", "HttpHost", "WasmtimeHttpServer"]

#: the project's root (the Node host runs from it)
ROOT = Path(__file__).resolve().parents[2]
SERVE_JS = ROOT / "scripts" / "spin_host" / "serve.mjs"


class WasmtimeHttpServer:
    """Serves an HTTP component with wasmtime (:class:`ComponentHost` with ``python_wasi``):
    every request gets a fresh instance, as in Spin; requests are handled one at a time.

    Each request is logged as one JSON line (``logger: spin.host``: request id, method,
    path, status, duration; ``memory_bytes`` is null — the wasmtime package cannot read a
    component's memory; the Node engine reports it). A trap before the component answered
    gives a 500 with ``{error, error_id}``; after the headers went out, the connection is
    closed mid-body.
    """

    def __init__(
        self,
        wasm: str | os.PathLike[str],
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        state_dir: str = ".spin",
        variables: Mapping[str, str] | None = None,
        env: Mapping[str, str] | None = None,
        dirs: Mapping[str, str] | None = None,
        memory_limit: int | None = None,
        emit: Callable[[str], None] | None = None,
        engine_settings: EngineSettings | None = None,
        deferred_reset: bool = True,
    ) -> None:
        self.component = ComponentHost(
            wasm, state=SpinState(state_dir, load_variables(variables)), env=env,
            dirs={os.path.abspath(h): g for h, g in (dirs or {}).items()}, memory_limit=memory_limit,
            python_wasi=True, on_line=emit, engine_settings=engine_settings, deferred_reset=deferred_reset,
        )
        self.emit = emit or (lambda line: None)
        self.bind = (host, port)
        self.url = ""
        self._server: Any = None
        from concurrent.futures import ThreadPoolExecutor

        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spin-wasmtime")

    def start(self) -> WasmtimeHttpServer:
        import http.server

        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # the headers and the body go out as separate writes: with Nagle's algorithm on, a
            # kept-alive connection waits for the client's delayed ACK (~40 ms) between them
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _any(self) -> None:
                # one long-lived thread runs every instance: wasmtime sets itself up per thread
                # (~6 ms measured), and requests are handled one at a time anyway
                outer._worker.submit(outer.handle, self).result()

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _any

        self._server = http.server.ThreadingHTTPServer(self.bind, Handler)
        self._server.daemon_threads = True
        host, port = self._server.server_address[:2]
        self.url = f"http://{host}:{port}"
        threading.Thread(target=self._server.serve_forever, name="spin-wasmtime-http", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        self._worker.shutdown(wait=True)
        self.component.close()

    def handle(self, h: Any) -> None:
        """One request: read it, run the component, stream its answer, log a line."""
        started = time.perf_counter()
        request_id = h.headers.get("x-request-id") or os.urandom(8).hex()
        body = _read_request_body(h)
        headers = [(k.lower(), v.encode("latin-1")) for k, v in h.headers.items()]
        request = IncomingRequest(h.command, h.path, headers, body, authority=h.headers.get("host"))
        sent: dict[str, Any] = {}

        def on_response(result: Any) -> None:
            if isinstance(result, Err):
                sent["status"] = _send_error(h, 500, f"the component answered with an error: {result.value}")
                return
            response = result.value
            names = {k for k, _ in response.headers.entries}
            given = response.headers.get("x-request-id")
            if given:
                sent["request_id"] = given[0].decode("latin-1")
            chunked = "content-length" not in names and h.command != "HEAD"
            h.send_response(response.status)
            for k, v in response.headers.entries:
                h.send_header(k, v.decode("latin-1"))
            if chunked:
                h.send_header("transfer-encoding", "chunked")
            h.end_headers()
            sent["status"] = response.status

            def write(data: bytes) -> None:
                if h.command == "HEAD":
                    return
                h.wfile.write(b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)
                h.wfile.flush()

            def finish() -> None:
                if chunked:
                    h.wfile.write(b"0\r\n\r\n")
                h.wfile.flush()
                sent["finished"] = True

            response.attach(write, finish)

        error = None
        try:
            self.component.http(request, on_response)
            if "status" not in sent:
                error = "the component returned without an answer"
        except GuestError as exc:
            error = str(exc)
        except OSError as exc:  # the client went away
            error = f"{type(exc).__name__}: {exc}"
        if error is not None and "status" not in sent:
            sent["status"] = _send_error(h, 500, error)
        elif error is not None or (sent.get("status") and "finished" not in sent and h.command != "HEAD"):
            h.close_connection = True
        self.component.stdout_lines.clear()  # emitted as they came; a server must not keep them
        self.emit(json.dumps({
            "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "level": "error" if error else "info",
            "logger": "spin.host", "msg": "request", "request_id": sent.get("request_id", request_id), "method": h.command,
            "path": h.path, "status": sent.get("status"), "duration_ms": round((time.perf_counter() - started) * 1000, 3),
            "memory_bytes": None, "instance": "fresh", "engine": "wasmtime", **({"error": error} if error else {}),
        }))


def _read_request_body(h: Any) -> bytes:
    if "chunked" in (h.headers.get("transfer-encoding") or "").lower():
        data = bytearray()
        while True:
            size = int(h.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while h.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return bytes(data)
            data += h.rfile.read(size)
            h.rfile.readline()
    length = int(h.headers.get("content-length") or 0)
    return h.rfile.read(length) if length else b""


def _send_error(h: Any, status: int, message: str) -> int:
    """The host's own error answer, in the handlers' one error shape."""
    from active_data_flow.handlers.http import error_response
    from active_data_flow.ids import new_id

    response = error_response(status, message, error_id=new_id(12))
    payload = response.encoded()
    h.send_response(status)
    for k, v in response.headers.items():
        h.send_header(k, v)
    h.send_header("content-length", str(len(payload)))
    h.end_headers()
    h.wfile.write(payload)
    h.wfile.flush()
    return status


class HttpHost:
    """Serve an HTTP component locally: start, wait until it listens, stop.

    ``engine="wasmtime"`` (the default) runs it in this process with wasmtime — the engine
    Spin uses — and WASI in Python (:mod:`active_data_flow.spin_app.local_host.wasi`), a fresh instance per
    request; ``engine="node"`` runs ``scripts/spin_host/serve.mjs`` (jco + preview2-shim) as a
    subprocess, which also reports each instance's memory size and can reuse one instance.

    ::

        with HttpHost("build/spin/http.wasm", state_dir=tmp, variables={"x": "1"}) as host:
            urllib.request.urlopen(host.url + "/flows/orders")
    """

    def __init__(
        self,
        wasm: str | os.PathLike[str],
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        state_dir: str = ".spin",
        variables: Mapping[str, str] | None = None,
        env: Mapping[str, str] | None = None,
        dirs: Mapping[str, str] | None = None,
        reuse_instance: bool = False,
        node: str | None = None,
        log: str | None = None,
        engine: str = "wasmtime",
        memory_limit: int | None = None,
        engine_settings: EngineSettings | None = None,
        deferred_reset: bool = True,
    ) -> None:
        if engine not in ("wasmtime", "node"):
            raise ValueError(f"engine must be 'wasmtime' or 'node', got {engine!r}")
        if engine == "wasmtime" and reuse_instance:
            raise ValueError("reuse_instance is a Node-engine option (the wasmtime engine starts each request afresh)")
        self.engine = engine
        self.memory_limit = memory_limit
        self.engine_settings = engine_settings
        self.deferred_reset = deferred_reset
        self._wasmtime: WasmtimeHttpServer | None = None
        self.wasm = os.path.abspath(wasm)  # node runs from the project root
        self.port = port
        self.host = host
        self.state_dir = state_dir
        self.variables = dict(variables or {})
        self.env = dict(env or {})
        self.dirs = dict(dirs or {})
        self.reuse_instance = reuse_instance
        self.node = node or shutil.which("node") or "node"
        self.log = log
        self.url = ""
        self.ready_ms: float | None = None
        self.proc: subprocess.Popen[str] | None = None
        self.output: list[str] = []

    def command(self) -> list[str]:
        cmd = [self.node, str(SERVE_JS), self.wasm, "--port", str(self.port), "--host", self.host,
               "--state-dir", os.path.abspath(self.state_dir)]
        for k, v in self.variables.items():
            cmd += ["--var", f"{k}={v}"]
        for k, v in self.env.items():
            cmd += ["--env", f"{k}={v}"]
        for h, g in self.dirs.items():
            cmd += ["--dir", f"{os.path.abspath(h)}:{g}"]
        if self.reuse_instance:
            cmd.append("--reuse-instance")
        return cmd

    def start(self, timeout: float = 120.0) -> HttpHost:
        if self.engine == "wasmtime":
            return self._start_wasmtime()
        if not (ROOT / "node_modules" / "@bytecodealliance" / "jco").is_dir():
            raise RuntimeError("the Node packages of the Spin host are missing: run scripts/spin-setup (npm ci)")
        self.proc = subprocess.Popen(
            self.command(), cwd=str(ROOT), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        )
        ready = threading.Event()

        def pump() -> None:
            assert self.proc is not None and self.proc.stdout is not None
            sink = open(self.log, "a", encoding="utf-8") if self.log else None
            try:
                for line in self.proc.stdout:
                    self.output.append(line.rstrip("\n"))
                    if sink:
                        sink.write(line)
                        sink.flush()
                    if not ready.is_set() and line.startswith('{"event":"listening"'):
                        info = json.loads(line)
                        self.url = info["url"]
                        self.ready_ms = info.get("ready_ms")
                        ready.set()
            finally:
                if sink:
                    sink.close()

        threading.Thread(target=pump, name="spin-http-host", daemon=True).start()
        deadline = time.monotonic() + timeout
        while not ready.wait(0.1):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the Spin HTTP host did not start:\n" + "\n".join(self.output[-40:]))
        return self

    def _start_wasmtime(self) -> HttpHost:
        t0 = time.perf_counter()
        sink = open(self.log, "a", encoding="utf-8") if self.log else None
        self._log_sink = sink

        def emit(line: str) -> None:
            self.output.append(line)
            if sink is not None:
                sink.write(line + "\n")
                sink.flush()

        server = WasmtimeHttpServer(
            self.wasm, port=self.port, host=self.host, state_dir=self.state_dir, variables=self.variables,
            env=self.env, dirs=self.dirs, memory_limit=self.memory_limit, emit=emit,
            engine_settings=self.engine_settings, deferred_reset=self.deferred_reset,
        )
        server.start()
        self._wasmtime = server
        self.url = server.url
        self.ready_ms = round((time.perf_counter() - t0) * 1000, 1)
        settings = server.component.engine_settings
        emit(json.dumps({"event": "listening", "url": self.url, "component": self.wasm, "ready_ms": self.ready_ms,
                         "engine": "wasmtime", "pooling": settings.pooling, "keep_resident": settings.keep_resident,
                         "deferred_reset": self.deferred_reset}))
        return self

    def stop(self) -> None:
        if self._wasmtime is not None:
            self._wasmtime.stop()
            self._wasmtime = None
            log_sink = getattr(self, "_log_sink", None)
            if log_sink is not None:
                log_sink.close()
                self._log_sink = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def __enter__(self) -> HttpHost:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
