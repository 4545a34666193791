"""Who is calling, and may they: client address, IP allowlist and token checks.

Standard library only (``ipaddress``, ``hmac``): the same checks run in the web app, the
Lambda handler and the Spin component.

- :func:`client_ip` trusts ``X-Forwarded-For`` only when the direct peer is a configured
  trusted proxy, and then only as far as the chain of trusted proxies goes.
- :func:`ip_allowed` matches addresses and CIDR ranges, IPv4 and IPv6.
- :func:`token_ok` compares secrets in constant time.
- :func:`authorize_heartbeat` puts them together in the order the heartbeat applies them;
  :func:`authorize_api` is the rule of the management API (and the flow-run routes).
- :class:`FailureThrottle` counts failed tokens per client address (the API's bearer token and
  the dashboard login share one) and refuses further *failed* attempts for a while; a correct
  token is never refused by it.
- :func:`short_tokens` names the configured tokens too short to withstand guessing.
- :func:`unstorable` finds what a request may carry but the schedule database cannot keep
  (NUL characters, lone surrogates, non-finite numbers, absurd nesting).

Example::

    settings = Settings(heartbeat_token="s3cret", heartbeat_allowlist=("10.0.0.0/8",))
    decision = authorize_heartbeat(settings, "10.1.2.3", {"x-heartbeat-token": "s3cret"})
    assert decision.status == 200 and decision.client == "10.1.2.3"
"""

from __future__ import annotations

import collections
import functools
import hmac
import ipaddress
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from active_data_flow.handlers.settings import Settings

__all__ = [
    "API_TOKEN_MESSAGE",
    "AUTH_FAILURES",
    "AUTH_WINDOW",
    "MIN_TOKEN_LENGTH",
    "TOKEN_HEADER",
    "Decision",
    "FailureThrottle",
    "authorize_api",
    "authorize_heartbeat",
    "client_ip",
    "get_header",
    "ip_allowed",
    "is_localhost",
    "parse_networks",
    "short_tokens",
    "token_ok",
    "unstorable",
]

TOKEN_HEADER = "X-Heartbeat-Token"
#: what a caller of the management API is told when its bearer token is missing or wrong
API_TOKEN_MESSAGE = "missing or invalid bearer token (Authorization: Bearer <ADF_API_TOKEN>)"
#: failed tokens from one client address within AUTH_WINDOW seconds before further failed
#: attempts are refused (429)
AUTH_FAILURES = 10
AUTH_WINDOW = 600.0
#: tokens shorter than this are reported at start-up (a random 32-character token is the advice)
MIN_TOKEN_LENGTH = 16

_Address = ipaddress.IPv4Address | ipaddress.IPv6Address
_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def get_header(headers: Mapping[str, str], name: str) -> str | None:
    """Header ``name`` from ``headers``, whatever the case of its keys."""
    value = headers.get(name.lower())
    if value is not None:
        return value
    wanted = name.lower()
    for key, item in headers.items():
        if key.lower() == wanted:
            return item
    return None


def _normalise(addr: _Address) -> _Address:
    # A dual-stack socket reports IPv4 clients as ::ffff:a.b.c.d; match them as IPv4.
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def _parse_address(text: str) -> _Address | None:
    """An address as written by a peer or a proxy: ``1.2.3.4``, ``::1``, ``[::1]``,
    ``[::1]:443``, ``1.2.3.4:80``. None when it is not one."""
    text = text.strip()
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or (end + 1 < len(text) and not (text[end + 1] == ":" and text[end + 2 :].isdigit())):
            return None
        text = text[1:end]
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
        if not port.isdigit():
            return None
        text = host
    try:
        return _normalise(ipaddress.ip_address(text))
    except ValueError:
        return None


@functools.lru_cache(maxsize=64)
def _networks(entries: tuple[str, ...], setting: str) -> tuple[_Network, ...]:
    out: list[_Network] = []
    bad: list[str] = []
    for entry in entries:
        try:
            net = ipaddress.ip_network(entry.strip(), strict=False)
        except ValueError:
            bad.append(entry)
            continue
        if isinstance(net, ipaddress.IPv6Network) and net.network_address.ipv4_mapped is not None and net.prefixlen >= 96:
            net = ipaddress.ip_network(f"{net.network_address.ipv4_mapped}/{net.prefixlen - 96}")
        out.append(net)
    if bad:
        raise ValueError(
            f"{setting}: {', '.join(repr(b) for b in bad)} "
            f"{'is' if len(bad) == 1 else 'are'} not an IP address or CIDR range"
        )
    return tuple(out)


def parse_networks(entries: Sequence[str], setting: str = "address list") -> tuple[_Network, ...]:
    """Addresses and CIDR ranges (``10.0.0.0/8``, ``::1``, ``fd00::/8``) as networks; a
    ``ValueError`` naming ``setting`` and every bad entry when some are not."""
    return _networks(tuple(entries), setting)


def _in(addr: _Address, networks: Sequence[_Network]) -> bool:
    return any(addr.version == net.version and addr in net for net in networks)


def client_ip(peer: str | None, headers: Mapping[str, str], trusted_proxies: Sequence[str]) -> str | None:
    """The address of the client behind ``peer`` (the direct TCP peer).

    ``X-Forwarded-For`` is read only when ``peer`` is one of ``trusted_proxies``: the list is
    walked from the right (the entry our own proxy appended) skipping trusted proxies, and
    the first untrusted address is the client. Anything the client wrote itself sits further
    left and is never reached. A malformed entry on that walk makes the header worthless:
    the peer is returned. Raises ``ValueError`` when ``trusted_proxies`` has a bad entry.
    """
    if peer is None:
        return None
    peer_addr = _parse_address(peer)
    if peer_addr is None:
        return peer
    trusted = parse_networks(trusted_proxies, "ADF_TRUSTED_PROXIES")
    if not trusted or not _in(peer_addr, trusted):
        return str(peer_addr)
    forwarded = get_header(headers, "x-forwarded-for")
    if not forwarded:
        return str(peer_addr)
    entries = forwarded.split(",")
    last: _Address = peer_addr
    for entry in reversed(entries):
        addr = _parse_address(entry)
        if addr is None:
            return str(peer_addr)
        if not _in(addr, trusted):
            return str(addr)
        last = addr
    # Every hop is a trusted proxy: the leftmost one is where the request started.
    return str(last)


def ip_allowed(ip: str | None, allowlist: Sequence[str]) -> bool:
    """True when ``allowlist`` is empty or ``ip`` is in one of its addresses / CIDR ranges.
    An unknown or malformed ``ip`` is never in a non-empty list."""
    if not allowlist:
        return True
    if ip is None:
        return False
    addr = _parse_address(ip)
    return addr is not None and _in(addr, parse_networks(allowlist, "ADF_HEARTBEAT_ALLOWLIST"))


_LOCALHOST = (ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1"))


def is_localhost(ip: str | None) -> bool:
    """True for ``127.0.0.1`` and ``::1`` (and ``::ffff:127.0.0.1``): what local tools and
    reverse proxies on this machine connect from. The rest of 127.0.0.0/8 does not count, so
    an address like 127.0.0.2 can stand for a remote client in tests and local setups."""
    addr = _parse_address(ip) if ip else None
    return addr in _LOCALHOST


def token_ok(provided: str | None, expected: str) -> bool:
    """Constant-time comparison; never true for a missing or empty token."""
    if not provided or not expected:
        return False
    return hmac.compare_digest(provided.encode("utf-8"), expected.encode("utf-8"))


@dataclass(frozen=True)
class Decision:
    """Whether a heartbeat request may run: ``status`` 200 or the HTTP error to answer,
    ``outcome`` for the heartbeat log (``ok | forbidden | unauthorized | refused``),
    ``message`` for the caller, ``client`` the resolved client address."""

    status: int
    outcome: str
    message: str
    client: str | None

    @property
    def allowed(self) -> bool:
        return self.status == 200


def authorize_heartbeat(settings: Settings, peer: str | None, headers: Mapping[str, str]) -> Decision:
    """Allowlist first (403), then the token: none configured and the heartbeat not
    explicitly open → 503; missing or wrong ``X-Heartbeat-Token`` → 401.

    A malformed ``ADF_TRUSTED_PROXIES`` or ``ADF_HEARTBEAT_ALLOWLIST`` refuses every request
    (503) rather than guessing what the operator meant.
    """
    try:
        client = client_ip(peer, headers, settings.trusted_proxies)
        allowed = ip_allowed(client, settings.heartbeat_allowlist)
    except ValueError as exc:
        return Decision(503, "refused", f"the heartbeat is misconfigured: {exc}", peer)
    if not allowed:
        return Decision(403, "forbidden", f"client {client or 'unknown'} is not in ADF_HEARTBEAT_ALLOWLIST", client)
    if not settings.heartbeat_token:
        if settings.heartbeat_open:
            return Decision(200, "ok", "heartbeat open (ADF_HEARTBEAT_OPEN=true, no token required)", client)
        return Decision(
            503,
            "refused",
            "the heartbeat has no token configured: set ADF_HEARTBEAT_TOKEN and send it in the "
            f"{TOKEN_HEADER} header (or set ADF_HEARTBEAT_OPEN=true for local use only)",
            client,
        )
    provided = get_header(headers, TOKEN_HEADER)
    if not provided:
        return Decision(401, "unauthorized", f"missing {TOKEN_HEADER} header", client)
    if not token_ok(provided, settings.heartbeat_token):
        return Decision(401, "unauthorized", f"invalid {TOKEN_HEADER}", client)
    return Decision(200, "ok", "token accepted", client)


def authorize_api(settings: Settings, peer: str | None, headers: Mapping[str, str]) -> Decision:
    """The management API's rule (also the flow-run routes'): with ``ADF_API_TOKEN`` set,
    ``Authorization: Bearer <token>`` from anywhere (401 ``missing`` without one, 401
    ``bad_token`` for a wrong one); without it only a local client (127.0.0.1, ::1) that is
    not a reverse proxy forwarding someone else's request (403). A malformed
    ``ADF_TRUSTED_PROXIES`` refuses every request (503). Reads headers only: it is decided
    before any byte of the body is read."""
    if settings.api_token:
        scheme, _, credentials = (get_header(headers, "authorization") or "").strip().partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            return Decision(401, "missing", API_TOKEN_MESSAGE, peer)
        if not token_ok(credentials.strip(), settings.api_token):
            try:
                client = client_ip(peer, headers, settings.trusted_proxies)
            except ValueError:
                client = peer
            return Decision(401, "bad_token", API_TOKEN_MESSAGE, client)
        return Decision(200, "ok", "token accepted", peer)
    try:
        client = client_ip(peer, headers, settings.trusted_proxies)
    except ValueError as exc:
        return Decision(503, "refused", f"the management API is misconfigured: {exc}", peer)
    # A local peer that forwards for someone else is a reverse proxy: the real caller is
    # elsewhere, so local-only access must not extend to it.
    proxied = client == peer and any(get_header(headers, h) is not None for h in ("x-forwarded-for", "forwarded"))
    if not is_localhost(client) or proxied:
        return Decision(
            403,
            "forbidden",
            f"the management API accepts only local clients (127.0.0.1, ::1) when ADF_API_TOKEN is not set "
            f"(client {client}{', via a proxy' if proxied else ''}); set ADF_API_TOKEN to use it remotely",
            client,
        )
    return Decision(200, "ok", "local client", client)


class FailureThrottle:
    """Failed authentication attempts per client address, over a sliding window.

    After ``limit`` failures from one address within ``window`` seconds,
    :meth:`retry_after` answers how many seconds to wait: further *failed* attempts from it
    are refused (429 with ``Retry-After``) and still counted, so a guesser that keeps going
    stays refused. It never judges a correct token: callers check the token first and ask
    the throttle only about a wrong one, so the rightful owner is never locked out by
    someone guessing from the same address (a NAT, a proxy). Thread-safe; at most
    ``max_clients`` addresses are remembered (the ones idle longest are forgotten first).

    Example::

        throttle = FailureThrottle(limit=3, window=60)
        for _ in range(3):
            assert throttle.retry_after("10.0.0.9") is None
            throttle.failed("10.0.0.9")
        assert throttle.retry_after("10.0.0.9") == 60
    """

    def __init__(
        self,
        limit: int = AUTH_FAILURES,
        window: float = AUTH_WINDOW,
        *,
        max_clients: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = int(limit)
        self.window = float(window)
        self.max_clients = int(max_clients)
        self._clock = clock
        self._failures: collections.OrderedDict[str, collections.deque[float]] = collections.OrderedDict()
        self._lock = threading.Lock()

    def retry_after(self, client: str) -> int | None:
        """Whole seconds until ``client`` may fail again without being refused; None when
        it is not throttled."""
        now = self._clock()
        with self._lock:
            times = self._failures.get(client)
            if times is None or len(times) < self.limit or now - times[0] >= self.window:
                return None
            return max(1, math.ceil(self.window - (now - times[0])))

    def failed(self, client: str) -> None:
        """Count one failed attempt from ``client``."""
        now = self._clock()
        with self._lock:
            times = self._failures.pop(client, None) or collections.deque(maxlen=max(self.limit, 1))
            times.append(now)
            self._failures[client] = times  # now the most recently active
            if len(self._failures) > self.max_clients:
                for stale in [c for c, t in self._failures.items() if now - t[-1] >= self.window]:
                    del self._failures[stale]
                while len(self._failures) > self.max_clients:
                    self._failures.popitem(last=False)


def short_tokens(settings: Settings) -> list[str]:
    """The settings whose configured token is shorter than :data:`MIN_TOKEN_LENGTH`."""
    tokens = (("ADF_API_TOKEN", settings.api_token), ("ADF_HEARTBEAT_TOKEN", settings.heartbeat_token))
    return [name for name, token in tokens if token and len(token) < MIN_TOKEN_LENGTH]


#: deepest nesting of lists and mappings a stored value may have
MAX_DEPTH = 64


def unstorable(value: Any, where: str = "") -> list[str]:
    """What in plain JSON-like data (mappings, lists, strings, numbers) the schedule
    database cannot store, or stores differently from what was sent, one problem per place
    (``configuration.sink.url: ...``): a NUL character (PostgreSQL text cannot hold one), a
    lone surrogate (not encodable as UTF-8), a number that is not finite (NaN, Infinity: not
    JSON), nesting deeper than :data:`MAX_DEPTH`. Keys are checked like values. Iterative:
    any depth of input is safe to check."""
    problems: list[str] = []
    stack: list[tuple[Any, str, int]] = [(value, where, 0)]
    while stack and len(problems) < 20:
        item, at, depth = stack.pop()
        name = at or "value"
        if isinstance(item, str):
            if "\x00" in item:
                problems.append(f"{name}: contains a NUL character (\\u0000), which cannot be stored")
            else:
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError:
                    problems.append(f"{name}: is not valid Unicode (a lone surrogate such as \\ud800)")
        elif isinstance(item, float):
            if not math.isfinite(item):
                problems.append(f"{name}: {item!r} is not a JSON number")
        elif isinstance(item, Mapping | list | tuple):
            if depth >= MAX_DEPTH:
                problems.append(f"{name}: nested deeper than {MAX_DEPTH} levels")
                continue
            if isinstance(item, Mapping):
                for key, sub in item.items():
                    path = f"{at}.{key}" if at else str(key)
                    stack.append((key, f"{path} (the key)", depth + 1))
                    stack.append((sub, path, depth + 1))
            else:
                stack.extend((sub, f"{at}.{i}" if at else str(i), depth + 1) for i, sub in enumerate(item))
    return sorted(dict.fromkeys(problems))
