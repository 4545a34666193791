"""A TCP proxy a test can cut: a real network outage between a flow and its sink.

``TcpProxy(("127.0.0.1", 5432))`` listens on 127.0.0.1 on a free port (:attr:`port`) and
forwards each connection to the target. :meth:`cut` makes the outage real for every client:
open connections are reset (client and upstream side), and the listening socket is closed, so
a new connection is refused — what a client sees when the server or the network goes away.
:meth:`restore` listens again on the same port. Used as a context manager, it shuts
everything down on exit.

One thread accepts; each connection gets one thread that moves bytes both ways with
``select`` (it blocks until there is something to move — no polling). :meth:`cut` wakes those
threads by shutting their sockets down and waits for them to finish, so when it returns no
connection through the proxy is open. :meth:`cut` may be called from any thread, also from a
server the proxy forwards to (to cut between a request and its answer).

The port is taken below the kernel's range of ephemeral ports: while the proxy is cut, a
client connecting again and again to a free *ephemeral* port could be given that very port as
its own source port and connect to itself (TCP simultaneous open), and the proxy could not
listen there again.

Example::

    with TcpProxy(("127.0.0.1", 5432)) as proxy:
        url = f"postgresql://root@127.0.0.1:{proxy.port}/test"
        proxy.cut()      # connections reset, new ones refused
        proxy.restore()  # the same port works again
"""

from __future__ import annotations

import contextlib
import random
import select
import socket
import struct
import threading
from pathlib import Path
from types import TracebackType

__all__ = ["TcpProxy"]

_CHUNK = 65536


class TcpProxy:
    """Forwards 127.0.0.1:``port`` to ``target`` until :meth:`cut`; see the module doc."""

    def __init__(self, target: tuple[str, int], *, port: int = 0) -> None:
        self.target = target
        self.port = port
        self._control = threading.RLock()  # start / cut, one at a time
        self._lock = threading.Lock()  # the open connections
        self._listener: socket.socket | None = None
        self._wake: tuple[socket.socket, socket.socket] | None = None
        self._acceptor: threading.Thread | None = None
        self._pipes: dict[threading.Thread, list[socket.socket]] = {}
        self._cuts = 0  # a connection accepted before a cut must not live on after it

    # -- the outage a test controls

    def start(self) -> TcpProxy:
        """Listen (on :attr:`port`, or on a free port the first time) and forward."""
        with self._control:
            if self._listener is not None:
                return self
            listener = _listen(self.port)
            self.port = listener.getsockname()[1]
            self._listener = listener
            self._wake = socket.socketpair()
            self._acceptor = threading.Thread(
                target=self._accept_loop, args=(listener, self._wake[0]), name=f"tcp-proxy-{self.port}", daemon=True
            )
            self._acceptor.start()
            return self

    def cut(self) -> None:
        """Stop listening (new connections are refused) and reset every open connection."""
        with self._control:
            if self._listener is not None:
                assert self._wake is not None and self._acceptor is not None
                self._wake[1].send(b"x")
                self._acceptor.join()
                self._listener.close()
                for end in self._wake:
                    end.close()
                self._listener = self._wake = self._acceptor = None
            with self._lock:
                self._cuts += 1
                pipes = dict(self._pipes)
            for sockets in pipes.values():
                for sock in sockets:
                    _reset(sock)
            for thread in pipes:
                thread.join()

    def restore(self) -> None:
        """Listen again on the same port."""
        self.start()

    def close(self) -> None:
        self.cut()

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- moving bytes

    def _accept_loop(self, listener: socket.socket, wake: socket.socket) -> None:
        while True:
            ready, _, _ = select.select([listener, wake], [], [])
            if wake in ready:
                return
            try:
                client, _ = listener.accept()
            except OSError:
                continue
            thread = threading.Thread(
                target=self._pipe, args=(client, self._cuts), name=f"tcp-proxy-{self.port}-pipe", daemon=True
            )
            with self._lock:
                self._pipes[thread] = [client]
            thread.start()

    def _pipe(self, client: socket.socket, cuts: int) -> None:
        me = threading.current_thread()
        sockets = [client]
        try:
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                _reset(client)  # the target is down: the client sees its connection reset
                return
            upstream.settimeout(None)
            sockets.append(upstream)
            for sock in sockets:  # pass small messages on at once, as the two ends do (no Nagle delay)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                if self._cuts != cuts:  # cut() ran while this one was connecting
                    for sock in sockets:
                        _reset(sock)
                    return
                self._pipes[me] = sockets
            _forward(client, upstream)
        finally:
            with self._lock:
                self._pipes.pop(me, None)
            for sock in sockets:
                sock.close()


def _forward(client: socket.socket, upstream: socket.socket) -> None:
    """Copy bytes both ways until both directions are done (a half-close is passed on)."""
    peer = {client: upstream, upstream: client}
    reading = [client, upstream]
    while reading:
        ready, _, _ = select.select(reading, [], [])
        for sock in ready:
            try:
                data = sock.recv(_CHUNK)
                if data:
                    peer[sock].sendall(data)
                    continue
                peer[sock].shutdown(socket.SHUT_WR)
            except OSError:
                return  # reset, or cut: close both
            reading.remove(sock)


def _reset(sock: socket.socket) -> None:
    """Close abruptly: the peer gets an RST (SO_LINGER 0); threads blocked on ``sock`` wake up."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def _listen(port: int) -> socket.socket:
    """A listening socket on 127.0.0.1:``port``; ``port`` 0: a free one below the ephemeral range."""
    candidates = [port]
    if port == 0:
        try:
            low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            low = 32768
        candidates = [*random.sample(range(max(1024, low - 12000), low), 50), 0]
    for i, candidate in enumerate(candidates):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # the same port again right after cut(), whatever state the connections just closed are in
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", candidate))
            sock.listen(64)
        except OSError:
            sock.close()
            if i == len(candidates) - 1:
                raise
            continue
        return sock
    raise AssertionError("unreachable")
