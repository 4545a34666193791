"""A real uvicorn server running the heartbeat web app in a background thread, for tests.

The server is built by :func:`active_data_flow.handlers.web.app.make_server` — the same configuration
``adf serve`` runs (no uvicorn proxy headers, JSON logs) — on a socket bound to a free port.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx

from active_data_flow.handlers.schedule.store import ScheduleStore
from active_data_flow.handlers.settings import Settings
from active_data_flow.handlers.web.app import make_server
from active_data_flow.logs import JsonFormatter


@contextlib.contextmanager
def live_server(settings: Settings, store: ScheduleStore, host: str = "127.0.0.1") -> Iterator[str]:
    """Serve on ``host`` (``::1`` for IPv6) and yield the base URL."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    server = make_server(settings, host, port, store=store, log_level="warning")
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    try:
        yield f"http://[{host}]:{port}" if family == socket.AF_INET6 else f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


def client_from(address: str | None = None, **kwargs: Any) -> httpx.Client:
    """An httpx client whose requests leave from ``address`` (any 127.0.0.0/8 address works:
    Linux routes the whole range to the loopback interface)."""
    transport = httpx.HTTPTransport(local_address=address) if address else httpx.HTTPTransport()
    return httpx.Client(transport=transport, timeout=30, **kwargs)


class LogCapture:
    """The JSON lines an ``adf.*`` logger writes, parsed."""

    def __init__(self, logger: str) -> None:
        self.stream = io.StringIO()
        self.handler = logging.StreamHandler(self.stream)
        self.handler.setFormatter(JsonFormatter())
        self.logger = logging.getLogger(logger)

    def __enter__(self) -> LogCapture:
        self.level = self.logger.level
        self.logger.setLevel(logging.INFO)
        self.logger.addHandler(self.handler)
        return self

    def __exit__(self, *exc: object) -> None:
        self.logger.removeHandler(self.handler)
        self.logger.setLevel(self.level)

    @property
    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stream.getvalue().splitlines() if line.strip()]
