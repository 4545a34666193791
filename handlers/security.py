"""Who is calling, and may they: client address, IP allowlist and token checks.

Standard library only (``ipaddress``, ``hmac``): the same checks run in the web app, the
Lambda handler and the Spin component.

- :func:`client_ip` trusts ``X-Forwarded-For`` only when the direct peer is a configured
  trusted proxy, and then only as far as the chain of trusted proxies goes.
- :func:`ip_allowed` matches addresses and CIDR ranges, IPv4 and IPv6.
- :func:`token_ok` compares secrets in constant time.
- :func:`authorize_heartbeat` puts them together in the order the heartbeat applies them.

Example::

    settings = Settings(heartbeat_token="s3cret", heartbeat_allowlist=("10.0.0.0/8",))
    decision = authorize_heartbeat(settings, "10.1.2.3", {"x-heartbeat-token": "s3cret"})
    assert decision.status == 200 and decision.client == "10.1.2.3"
"""

from __future__ import annotations

import functools
import hmac
import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from handlers.settings import Settings

__all__ = [
    "TOKEN_HEADER",
    "Decision",
    "authorize_heartbeat",
    "client_ip",
    "get_header",
    "ip_allowed",
    "is_localhost",
    "parse_networks",
    "token_ok",
]

TOKEN_HEADER = "X-Heartbeat-Token"

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
