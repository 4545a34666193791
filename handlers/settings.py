"""Settings of the heartbeat runtime, from the environment or a settings file.

Names (environment variables, and the same keys in the settings file):

=============================  ============================================  =====================
name                           meaning                                        default
=============================  ============================================  =====================
``ADF_DATABASE_URL``           schedule database (SQLite or PostgreSQL URL)    ``sqlite:///<state dir>/adf.db``
``ADF_HEARTBEAT_TOKEN``        secret expected in ``X-Heartbeat-Token``        none: heartbeat refused
``ADF_HEARTBEAT_OPEN``         ``true``: accept heartbeats without a token     ``false``
                               (local use only)
``ADF_HEARTBEAT_ALLOWLIST``    comma-separated addresses / CIDR ranges         empty: any address
``ADF_TRUSTED_PROXIES``        proxies whose ``X-Forwarded-For`` is honoured   empty: none
``ADF_HEARTBEAT_MODE``         ``sync`` (run in the request) or ``async``      ``sync``
``ADF_HEARTBEAT_PATH``         path of the heartbeat endpoint                  ``/heartbeat``
``ADF_API_TOKEN``              bearer token of the management API              none: 127.0.0.1 / ::1 only
``ADF_LEASE_SECONDS``          run lease of a worker                           ``300``
``ADF_MAX_ATTEMPTS``           attempts of a run whose worker died             ``3``
``ADF_RETRY_BACKOFF_SECONDS``  delay before such a retry (doubles)             ``0``
``ADF_CLAIM_LIMIT``            flows claimed per heartbeat                     ``100``
``ADF_MAX_BODY_BYTES``         largest request body accepted (bytes)           ``6291456`` (6 MiB)
``ADF_HEARTBEAT_LOG_KEEP``     heartbeat log rows kept (the newest)            ``10000``
``ADF_HEARTBEAT_LOG_DAYS``     heartbeat log rows older than this are pruned   ``30``
``ADF_STATE_DIR``              checkpoints, dead letters, embedded database    ``./.adf``
``ADF_SETTINGS_FILE``          the settings file (TOML)                        ``./adf.toml`` if present
=============================  ============================================  =====================

The environment wins over the file. Unknown ``ADF_*`` keys in the file are an error (a typo
must not silently leave the heartbeat open).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

__all__ = ["Settings", "SettingsError", "load_settings", "max_body_bytes"]


class SettingsError(ValueError):
    """Settings that cannot be used; ``problems`` lists every one."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid settings: " + "; ".join(problems))


def _csv(value: Any) -> list[str]:
    if isinstance(value, list | tuple):
        return [str(v).strip() for v in value if str(v).strip()]
    return [part.strip() for part in str(value or "").split(",") if part.strip()]


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected true or false, got {value!r}")


@dataclass(frozen=True)
class Settings:
    """Resolved settings; see the module docstring for names and defaults."""

    state_dir: str = field(default_factory=lambda: os.path.abspath(os.environ.get("ADF_STATE_DIR") or ".adf"))
    database_url: str = ""
    heartbeat_token: str | None = field(default=None, repr=False)
    heartbeat_open: bool = False
    heartbeat_allowlist: tuple[str, ...] = ()
    trusted_proxies: tuple[str, ...] = ()
    heartbeat_mode: str = "sync"
    heartbeat_path: str = "/heartbeat"
    api_token: str | None = field(default=None, repr=False)
    lease_seconds: float = 300.0
    max_attempts: int = 3
    retry_backoff_seconds: float = 0.0
    claim_limit: int = 100
    max_body_bytes: int = 6 * 1024 * 1024
    heartbeat_log_keep: int = 10_000
    heartbeat_log_days: float = 30.0
    source: str = "defaults"

    def __post_init__(self) -> None:
        if not self.database_url:
            object.__setattr__(self, "database_url", f"sqlite:///{os.path.join(self.state_dir, 'adf.db')}")

    def redacted(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        for secret in ("heartbeat_token", "api_token"):
            if out[secret]:
                out[secret] = "***"
        from active_data_flow.redact import redact_text

        out["database_url"] = redact_text(out["database_url"])
        return out


_KEYS: dict[str, tuple[str, Any]] = {
    "ADF_STATE_DIR": ("state_dir", os.path.abspath),
    "ADF_DATABASE_URL": ("database_url", str),
    "ADF_HEARTBEAT_TOKEN": ("heartbeat_token", str),
    "ADF_HEARTBEAT_OPEN": ("heartbeat_open", _bool),
    "ADF_HEARTBEAT_ALLOWLIST": ("heartbeat_allowlist", lambda v: tuple(_csv(v))),
    "ADF_TRUSTED_PROXIES": ("trusted_proxies", lambda v: tuple(_csv(v))),
    "ADF_HEARTBEAT_MODE": ("heartbeat_mode", str),
    "ADF_HEARTBEAT_PATH": ("heartbeat_path", str),
    "ADF_API_TOKEN": ("api_token", str),
    "ADF_LEASE_SECONDS": ("lease_seconds", float),
    "ADF_MAX_ATTEMPTS": ("max_attempts", int),
    "ADF_RETRY_BACKOFF_SECONDS": ("retry_backoff_seconds", float),
    "ADF_CLAIM_LIMIT": ("claim_limit", int),
    "ADF_MAX_BODY_BYTES": ("max_body_bytes", int),
    "ADF_HEARTBEAT_LOG_KEEP": ("heartbeat_log_keep", int),
    "ADF_HEARTBEAT_LOG_DAYS": ("heartbeat_log_days", float),
}


def _read_file(path: str) -> dict[str, Any]:
    import tomllib

    with open(path, "rb") as f:
        data = tomllib.load(f)
    return {str(k).upper(): v for k, v in data.items()}


def load_settings(
    environ: Mapping[str, str] | None = None, *, file: str | None = None, overrides: Mapping[str, Any] | None = None
) -> Settings:
    """Settings from (lowest first) defaults, the settings file, the environment, ``overrides``.

    ``overrides`` take the same ``ADF_*`` keys (for tests and CLI flags).
    """
    env = os.environ if environ is None else environ
    problems: list[str] = []
    values: dict[str, Any] = {}
    sources = ["defaults"]
    path = file or env.get("ADF_SETTINGS_FILE") or ("adf.toml" if os.path.exists("adf.toml") else None)
    layers: list[tuple[str, Mapping[str, Any]]] = []
    if path:
        try:
            layers.append((f"file {path}", _read_file(path)))
        except (OSError, ValueError) as exc:
            problems.append(f"settings file {path}: {exc}")
    layers.append(("environment", {k: v for k, v in env.items() if k in _KEYS}))
    if overrides:
        layers.append(("overrides", {k.upper(): v for k, v in overrides.items()}))
    for origin, layer in layers:
        used = False
        for key, raw in layer.items():
            if key not in _KEYS:
                if origin.startswith("file"):
                    problems.append(f"{origin}: unknown key {key} (known: {', '.join(sorted(_KEYS))})")
                continue
            name, parse = _KEYS[key]
            try:
                values[name] = parse(raw)
                used = True
            except (TypeError, ValueError) as exc:
                problems.append(f"{key}: {exc}")
        if used:
            sources.append(origin)
    mode = values.get("heartbeat_mode", "sync")
    if mode not in ("sync", "async"):
        problems.append(f"ADF_HEARTBEAT_MODE: {mode!r} is not 'sync' or 'async'")
    hb_path = values.get("heartbeat_path", "/heartbeat")
    if not str(hb_path).startswith("/"):
        problems.append(f"ADF_HEARTBEAT_PATH: {hb_path!r} must start with '/'")
    for name in ("lease_seconds", "max_attempts", "claim_limit", "max_body_bytes", "heartbeat_log_keep",
                 "heartbeat_log_days"):
        if name in values and values[name] <= 0:
            problems.append(f"{name}: must be greater than 0")
    if problems:
        raise SettingsError(problems)
    return Settings(**values, source=" < ".join(sources))


def max_body_bytes(environ: Mapping[str, str] | None = None) -> int:
    """``ADF_MAX_BODY_BYTES`` alone (default :attr:`Settings.max_body_bytes`, 6 MiB: Lambda's own
    synchronous payload limit), for the adapters that read a request body without the rest of
    the settings (the Lambda HTTP handler, the Spin HTTP component). Raises
    :class:`SettingsError` when it is not a positive integer."""
    env = os.environ if environ is None else environ
    raw = (env.get("ADF_MAX_BODY_BYTES") or "").strip()
    if not raw:
        return int(Settings.max_body_bytes)
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError([f"ADF_MAX_BODY_BYTES: expected a number of bytes, got {raw!r}"]) from None
    if value <= 0:
        raise SettingsError(["ADF_MAX_BODY_BYTES: must be greater than 0"])
    return value
