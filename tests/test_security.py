"""Client address resolution, allowlists and token checks of the heartbeat and the management
API, the failed-token throttle, the check of storable input (active_data_flow.handlers.security), and the
masking of secrets in values shown for editing (active_data_flow.redact.mask / unmask)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from package_tree import package_parent

from active_data_flow.handlers.security import (
    MIN_TOKEN_LENGTH,
    FailureThrottle,
    authorize_api,
    authorize_heartbeat,
    client_ip,
    ip_allowed,
    is_localhost,
    short_tokens,
    token_ok,
    unstorable,
)
from active_data_flow.handlers.settings import Settings
from active_data_flow.redact import MASK, mask, unmask
from active_data_flow.spec import flow_secret_keys

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
import active_data_flow.handlers.http, active_data_flow.handlers.security, active_data_flow.handlers.web.app
from active_data_flow.handlers.http import Request
from active_data_flow.handlers.security import authorize_heartbeat
from active_data_flow.handlers.settings import Settings
decision = authorize_heartbeat(Settings(heartbeat_token="t"), "::ffff:10.0.0.7", Request("POST", "/heartbeat", {{"X-Heartbeat-Token": "t"}}).headers)
third_party = sorted({{m.split(".")[0] for m in sys.modules}} - set(sys.stdlib_module_names) - {{"active_data_flow"}} - {{m.split(".")[0] for m in before}})
print(json.dumps({{"third_party": third_party, "status": decision.status, "client": decision.client}}))
"""


def test_the_heartbeat_http_layer_imports_with_only_the_standard_library() -> None:
    # What the Lambda handler and the Spin component will import: no FastAPI, pydantic, uvicorn.
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-S", "-E", "-c", PROBE.format(root=str(package_parent()))],
                         capture_output=True, text=True, timeout=60, cwd=root)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"third_party": [], "status": 200, "client": "10.0.0.7"}


# --------------------------------------------------------------------------- the management API's rule


@pytest.mark.parametrize(
    ("settings", "peer", "headers", "status", "outcome", "message"),
    [
        (Settings(api_token="tok"), "203.0.113.9", {"authorization": "Bearer tok"}, 200, "ok", ""),
        (Settings(api_token="tok"), "203.0.113.9", {"Authorization": "bearer  tok "}, 200, "ok", ""),
        (Settings(api_token="tok"), "127.0.0.1", {}, 401, "missing", "bearer token"),
        (Settings(api_token="tok"), "127.0.0.1", {"authorization": "Basic tok"}, 401, "missing", "bearer token"),
        (Settings(api_token="tok"), "127.0.0.1", {"authorization": "Bearer"}, 401, "missing", "bearer token"),
        (Settings(api_token="tok"), "127.0.0.1", {"authorization": "Bearer tok2"}, 401, "bad_token", "bearer token"),
        (Settings(), "127.0.0.1", {}, 200, "ok", ""),
        (Settings(), "::1", {}, 200, "ok", ""),
        (Settings(), "127.0.0.2", {}, 403, "forbidden", "client 127.0.0.2"),
        (Settings(), "127.0.0.1", {"x-forwarded-for": "203.0.113.5"}, 403, "forbidden", "via a proxy"),
        (Settings(trusted_proxies=("nonsense",)), "127.0.0.1", {}, 503, "refused", "ADF_TRUSTED_PROXIES"),
    ],
)
def test_authorize_api_decides_from_the_headers_alone(
    settings: Settings, peer: str, headers: dict[str, str], status: int, outcome: str, message: str
) -> None:
    decision = authorize_api(settings, peer, headers)
    assert (decision.status, decision.outcome) == (status, outcome)
    assert message in decision.message


def test_a_wrong_token_is_charged_to_the_forwarded_client_behind_a_trusted_proxy() -> None:
    settings = Settings(api_token="tok", trusted_proxies=("10.0.0.1",))
    decision = authorize_api(settings, "10.0.0.1", {"authorization": "Bearer x", "x-forwarded-for": "198.51.100.7"})
    assert (decision.outcome, decision.client) == ("bad_token", "198.51.100.7")


# --------------------------------------------------------------------------- throttle, short tokens


def test_the_throttle_refuses_after_the_limit_within_the_window_and_forgets_after_it() -> None:
    now = [1000.0]
    throttle = FailureThrottle(limit=3, window=60, clock=lambda: now[0])
    for _ in range(3):
        assert throttle.retry_after("10.0.0.9") is None
        throttle.failed("10.0.0.9")
        now[0] += 1
    assert throttle.retry_after("10.0.0.9") == 57  # the first failure leaves the window in 57 s
    assert throttle.retry_after("10.0.0.10") is None  # per address
    throttle.failed("10.0.0.9")  # a refused attempt still counts: the guesser stays refused
    now[0] += 57
    assert throttle.retry_after("10.0.0.9") is not None
    now[0] += 60
    assert throttle.retry_after("10.0.0.9") is None


def test_the_throttle_remembers_a_bounded_number_of_addresses() -> None:
    throttle = FailureThrottle(limit=1, window=600, max_clients=100)
    for i in range(1000):
        throttle.failed(f"10.0.{i // 256}.{i % 256}")
    assert throttle.retry_after("10.0.3.231") is not None  # the newest are kept
    assert throttle.retry_after("10.0.0.0") is None  # the oldest forgotten
    assert len(throttle._failures) <= 100


def test_short_tokens_are_named() -> None:
    short = "x" * (MIN_TOKEN_LENGTH - 1)
    assert short_tokens(Settings(api_token=short, heartbeat_token="y" * MIN_TOKEN_LENGTH)) == ["ADF_API_TOKEN"]
    assert short_tokens(Settings(heartbeat_token=short)) == ["ADF_HEARTBEAT_TOKEN"]
    assert short_tokens(Settings()) == []


# --------------------------------------------------------------------------- storable input


def test_unstorable_names_every_place_the_database_cannot_keep() -> None:
    deep: object = 1
    for _ in range(100):
        deep = [deep]
    problems = unstorable({"ok": ["text", 1, 2.5, None, True], "nul": "a\x00b", "k\x00": 1,
                           "surrogate": ["\ud800"], "nan": float("nan"), "inf": float("-inf"), "deep": deep},
                          "configuration")
    assert len(problems) == 6, problems
    joined = " | ".join(problems)
    for fragment in ("configuration.nul: contains a NUL", "(the key): contains a NUL",
                     "configuration.surrogate.0: is not valid Unicode", "configuration.nan: nan is not a JSON number",
                     "configuration.inf: -inf", "nested deeper than 64 levels"):
        assert fragment in joined
    assert unstorable({"a": [{"b": "ünïcødé ✓"}]}) == []
    nested: object = "x"
    for _ in range(200_000):  # any depth is safe to check
        nested = {"a": nested}
    assert len(unstorable(nested)) == 1


# --------------------------------------------------------------------------- masked secrets


STORED = {
    "name": "orders",
    "source": {"type": "http", "url": "https://api.example.com/orders?api_key=k3y&page=1",
               "auth": {"type": "bearer", "token": "t0ken"}},
    "steps": [{"type": "python", "function": "m:f", "options": {"password": "pw", "limit": 3}}],
    "sink": {"type": "sql", "url": "postgresql://app:s3cret@db.internal/shop", "table": "orders"},
}


def test_mask_hides_declared_named_and_embedded_secrets() -> None:
    keys = flow_secret_keys(STORED)
    assert {"source.auth", "source.headers", "sink.url"} <= keys
    shown = mask(STORED, keys)
    text = json.dumps(shown)
    for secret in ("k3y", "t0ken", "pw", "s3cret"):
        assert secret not in text
    assert shown["source"]["url"] == f"https://api.example.com/orders?api_key={MASK}&page=1"
    assert shown["source"]["auth"] == MASK and shown["sink"]["url"] == MASK
    assert shown["steps"][0]["options"] == {"password": MASK, "limit": 3}
    assert shown["sink"]["table"] == "orders"


def test_unmask_keeps_secrets_sent_back_masked_and_takes_new_ones() -> None:
    keys = flow_secret_keys(STORED)
    shown = mask(STORED, keys)
    assert unmask(shown, STORED, keys) == (STORED, [])

    edited = json.loads(json.dumps(shown))
    edited["sink"]["table"] = "orders_v2"
    edited["sink"]["url"] = "postgresql://app:n3w@db.internal/shop"
    saved, problems = unmask(edited, STORED, keys)
    assert problems == []
    assert saved["sink"] == {"type": "sql", "url": "postgresql://app:n3w@db.internal/shop", "table": "orders_v2"}
    assert saved["source"] == STORED["source"] and saved["steps"] == STORED["steps"]

    # a masked value edited (or moved) would store the mask itself: refused, named
    edited["source"]["url"] = f"https://api.example.com/v2/orders?api_key={MASK}"
    edited["sink"]["password"] = MASK
    _, problems = unmask(edited, STORED, keys)
    assert [p.split(":")[0] for p in problems] == ["sink.password", "source.url"]
    # a new value cannot hold a mask at all
    assert unmask(shown, None, keys)[1]


def test_flow_secret_keys_of_odd_configurations_are_empty_not_errors() -> None:
    for odd in (None, [], "x", {"source": "x", "sink": {"type": ["a"]}, "steps": [1, {"type": None}, {"type": "?"}]}):
        assert flow_secret_keys(odd) == set()
