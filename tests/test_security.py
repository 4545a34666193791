"""Client address resolution, allowlists and token checks of the heartbeat (handlers.security)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from handlers.security import authorize_heartbeat, client_ip, ip_allowed, is_localhost, token_ok
from handlers.settings import Settings

PROXIES = ["10.0.0.1", "10.0.1.0/24", "fd00::/8"]


@pytest.mark.parametrize(
    ("peer", "xff", "proxies", "expected"),
    [
        # no trusted proxies: the header is never read
        ("203.0.113.9", "1.2.3.4", [], "203.0.113.9"),
        # untrusted peer: a spoofed header is ignored
        ("203.0.113.9", "1.2.3.4", PROXIES, "203.0.113.9"),
        ("127.0.0.2", "127.0.0.1", ["127.0.0.1"], "127.0.0.2"),
        # trusted peer: the rightmost untrusted entry is the client
        ("10.0.0.1", "198.51.100.7", PROXIES, "198.51.100.7"),
        ("10.0.0.1", "6.6.6.6, 198.51.100.7", PROXIES, "198.51.100.7"),
        ("10.0.0.1", "6.6.6.6, 198.51.100.7, 10.0.1.20", PROXIES, "198.51.100.7"),
        ("10.0.1.5", "2001:db8::5, fd00::1", PROXIES, "2001:db8::5"),
        ("fd12::7", "198.51.100.7", PROXIES, "198.51.100.7"),
        # garbage left of the client is never reached
        ("10.0.0.1", "not-an-ip, 198.51.100.7", PROXIES, "198.51.100.7"),
        # a malformed entry on the walk: fall back to the peer
        ("10.0.0.1", "198.51.100.7, bogus", PROXIES, "10.0.0.1"),
        ("10.0.0.1", "198.51.100.7, ", PROXIES, "10.0.0.1"),
        ("10.0.0.1", "999.1.1.1", PROXIES, "10.0.0.1"),
        # only trusted hops: the leftmost one
        ("10.0.0.1", "10.0.1.9, 10.0.1.8", PROXIES, "10.0.1.9"),
        # trusted peer without the header
        ("10.0.0.1", None, PROXIES, "10.0.0.1"),
        # ports and brackets written by some proxies
        ("10.0.0.1", "198.51.100.7:5123", PROXIES, "198.51.100.7"),
        ("10.0.0.1", "[2001:db8::9]:443", PROXIES, "2001:db8::9"),
        ("10.0.0.1", "[2001:db8::9]", PROXIES, "2001:db8::9"),
        # IPv4-mapped IPv6, as a dual-stack socket reports IPv4 clients
        ("::ffff:203.0.113.9", None, [], "203.0.113.9"),
        ("::ffff:10.0.0.1", "::ffff:198.51.100.7", PROXIES, "198.51.100.7"),
        ("::1", None, [], "::1"),
        (None, "1.2.3.4", PROXIES, None),
    ],
)
def test_client_ip_honours_forwarded_for_only_from_trusted_proxies(
    peer: str | None, xff: str | None, proxies: list[str], expected: str | None
) -> None:
    headers = {"x-forwarded-for": xff} if xff is not None else {}
    assert client_ip(peer, headers, proxies) == expected


def test_client_ip_reads_the_header_whatever_its_case() -> None:
    assert client_ip("10.0.0.1", {"X-Forwarded-For": "198.51.100.7"}, PROXIES) == "198.51.100.7"


def test_a_malformed_trusted_proxy_setting_is_an_error_naming_the_setting() -> None:
    with pytest.raises(ValueError, match=r"ADF_TRUSTED_PROXIES: 'proxy.local' is not an IP address or CIDR range"):
        client_ip("10.0.0.1", {}, ["10.0.0.1", "proxy.local"])


@pytest.mark.parametrize(
    ("ip", "allowlist", "expected"),
    [
        ("1.2.3.4", [], True),
        (None, [], True),
        ("127.0.0.1", ["127.0.0.1/32"], True),
        ("127.0.0.2", ["127.0.0.1/32"], False),
        ("127.0.0.3", ["127.0.0.0/30"], True),
        ("127.0.0.4", ["127.0.0.0/30"], False),
        ("10.20.30.40", ["192.168.0.0/16", "10.0.0.0/8"], True),
        ("::1", ["::1"], True),
        ("::2", ["::1"], False),
        ("2001:db8::1234", ["2001:db8::/32"], True),
        ("2001:db9::1", ["2001:db8::/32"], False),
        ("::ffff:127.0.0.1", ["127.0.0.1"], True),
        ("127.0.0.1", ["::ffff:127.0.0.0/104"], True),
        ("127.0.0.1", ["::1"], False),
        ("::1", ["127.0.0.1"], False),
        ("10.0.0.1", ["10.0.0.5/8"], True),  # host bits set: the range is meant
        (None, ["127.0.0.1"], False),
        ("garbage", ["127.0.0.1"], False),
    ],
)
def test_ip_allowed_matches_addresses_and_cidr_ranges(ip: str | None, allowlist: list[str], expected: bool) -> None:
    assert ip_allowed(ip, allowlist) is expected


def test_a_malformed_allowlist_is_an_error() -> None:
    with pytest.raises(ValueError, match=re.escape("ADF_HEARTBEAT_ALLOWLIST: '10.0.0.0/33' is not")):
        ip_allowed("10.0.0.1", ["10.0.0.0/33"])


@pytest.mark.parametrize(
    ("provided", "expected_token", "ok"),
    [
        ("s3cret", "s3cret", True),
        ("s3cret ", "s3cret", False),
        ("S3CRET", "s3cret", False),
        ("", "s3cret", False),
        (None, "s3cret", False),
        ("", "", False),
        ("ünïcode-tøken", "ünïcode-tøken", True),
        ("ünïcode-tøken", "unicode-token", False),
    ],
)
def test_token_ok_compares_exactly(provided: str | None, expected_token: str, ok: bool) -> None:
    assert token_ok(provided, expected_token) is ok


@pytest.mark.parametrize(("ip", "local"), [("127.0.0.1", True), ("::1", True), ("::ffff:127.0.0.1", True),
                                            ("127.0.0.2", False), ("10.0.0.1", False), ("junk", False), (None, False)])
def test_is_localhost_means_127_0_0_1_and_ipv6_loopback_only(ip: str | None, local: bool) -> None:
    assert is_localhost(ip) is local


@pytest.mark.parametrize(
    ("settings", "peer", "headers", "status", "outcome", "message"),
    [
        (Settings(), "127.0.0.1", {}, 503, "refused", "set ADF_HEARTBEAT_TOKEN"),
        (Settings(heartbeat_open=True), "127.0.0.1", {}, 200, "ok", "ADF_HEARTBEAT_OPEN"),
        (Settings(heartbeat_token="t"), "127.0.0.1", {}, 401, "unauthorized", "missing X-Heartbeat-Token"),
        (Settings(heartbeat_token="t"), "127.0.0.1", {"x-heartbeat-token": "u"}, 401, "unauthorized", "invalid"),
        (Settings(heartbeat_token="t"), "127.0.0.1", {"x-heartbeat-token": "t"}, 200, "ok", "token accepted"),
        # an open heartbeat still checks a configured token
        (Settings(heartbeat_token="t", heartbeat_open=True), "127.0.0.1", {}, 401, "unauthorized", "missing"),
        # the allowlist comes first: a denied client learns nothing about the token
        (Settings(heartbeat_allowlist=("10.0.0.0/8",)), "127.0.0.1", {}, 403, "forbidden",
         "client 127.0.0.1 is not in ADF_HEARTBEAT_ALLOWLIST"),
        (Settings(heartbeat_token="t", heartbeat_allowlist=("10.0.0.0/8",)), "10.1.1.1",
         {"x-heartbeat-token": "t"}, 200, "ok", ""),
        (Settings(heartbeat_token="t", heartbeat_allowlist=("bad",)), "10.1.1.1",
         {"x-heartbeat-token": "t"}, 503, "refused", "ADF_HEARTBEAT_ALLOWLIST: 'bad'"),
        # behind a trusted proxy the forwarded client is judged
        (Settings(heartbeat_token="t", heartbeat_allowlist=("198.51.100.0/24",), trusted_proxies=("10.0.0.1",)),
         "10.0.0.1", {"x-heartbeat-token": "t", "x-forwarded-for": "198.51.100.7"}, 200, "ok", ""),
        (Settings(heartbeat_token="t", heartbeat_allowlist=("198.51.100.0/24",)),
         "10.0.0.1", {"x-heartbeat-token": "t", "x-forwarded-for": "198.51.100.7"}, 403, "forbidden",
         "client 10.0.0.1"),
    ],
)
def test_authorize_heartbeat_decides_in_order(
    settings: Settings, peer: str, headers: dict[str, str], status: int, outcome: str, message: str
) -> None:
    decision = authorize_heartbeat(settings, peer, headers)
    assert (decision.status, decision.outcome) == (status, outcome)
    assert message in decision.message
    assert decision.allowed is (status == 200)


PROBE = r"""
import json, sys
sys.path[:0] = [{root!r}]
before = set(sys.modules)
import handlers.http, handlers.security, handlers.web.app
from handlers.http import Request
from handlers.security import authorize_heartbeat
from handlers.settings import Settings
decision = authorize_heartbeat(Settings(heartbeat_token="t"), "::ffff:10.0.0.7", Request("POST", "/heartbeat", {{"X-Heartbeat-Token": "t"}}).headers)
third_party = sorted({{m.split(".")[0] for m in sys.modules}} - set(sys.stdlib_module_names) - {{"core", "handlers"}} - {{m.split(".")[0] for m in before}})
print(json.dumps({{"third_party": third_party, "status": decision.status, "client": decision.client}}))
"""


def test_the_heartbeat_http_layer_imports_with_only_the_standard_library() -> None:
    # What the Lambda handler and the Spin component will import: no FastAPI, pydantic, uvicorn.
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-S", "-E", "-c", PROBE.format(root=str(root))],
                         capture_output=True, text=True, timeout=60, cwd=root)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"third_party": [], "status": 200, "client": "10.0.0.7"}
