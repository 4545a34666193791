"""Secret redaction for logs, run records and ``adf config explain``.

Three tools, all pure functions of the standard library:

* :func:`is_secret_key` decides from a key *name* whether its value is a secret;
* :func:`redact_text` hides passwords embedded in URLs (``scheme://user:pass@host``) and
  secret-named query parameters (``?token=...``) inside any string;
* :func:`redact` returns a redacted deep copy of nested plain data (mappings, lists).

Redaction replaces a secret with :data:`REDACTED` (``"***"``); it never raises on odd input.
"""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["REDACTED", "is_secret_key", "redact", "redact_text"]

#: What a secret is replaced with.
REDACTED = "***"

# A key is secret when one of its words is one of these...
_SECRET_WORDS = frozenset(
    {
        "password",
        "passwd",
        "pwd",
        "passphrase",
        "secret",
        "secrets",
        "token",
        "credential",
        "credentials",
        "auth",
        "authorization",
        "authentication",
        "apikey",
        "accesskey",
        "privatekey",
        "secretkey",
        "signingkey",
        "sessionkey",
        "clientsecret",
        "sessiontoken",
        "dsn",
    }
)
# ... or two adjacent words joined give one of these ("api_key", "accessKey", "private-key").
_SECRET_PAIRS = frozenset(
    {
        "apikey",
        "accesskey",
        "privatekey",
        "secretkey",
        "signingkey",
        "sessionkey",
        "clientsecret",
        "sessiontoken",
    }
)
# ... unless its last word says the value only *names* something ("token_field", "auth_type").
_NAMING_SUFFIXES = frozenset(
    {"field", "column", "col", "name", "type", "env", "var", "variable", "kind", "method"}
)

_WORD_RE = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+")

# scheme://[user]:password@  -- userinfo may not contain / ? # @ unencoded (RFC 3986).
_URL_PASSWORD_RE = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/?#@]*:)(?P<password>[^\s/?#@]+)@")
# ?name=value or &name=value inside a URL-ish string.
_QUERY_PARAM_RE = re.compile(r"(?P<head>[?&;](?P<name>[A-Za-z0-9_.\-]+)=)(?P<value>[^&;#\s]*)")


def _words(name: str) -> list[str]:
    return [w.lower() for w in _WORD_RE.findall(name)]


@functools.lru_cache(maxsize=4096)  # the same few keys, again and again (every log line is redacted)
def is_secret_key(name: str) -> bool:
    """Whether a key called ``name`` holds a secret, judged from its name only.

    The name is split into words (``snake_case``, ``kebab-case``, ``camelCase``, dots), case
    ignored. It is secret when a word is a secret word (password, passwd, pwd, passphrase,
    secret, token, credential(s), auth, authorization, authentication, dsn, apikey,
    accesskey, privatekey…) or two adjacent words join into one (``api_key``, ``accessKey``,
    ``private-key``, ``client_secret``, ``session_token``…). Exception: when the *last* word
    says the value merely names something (field, column, col, name, type, env, var,
    variable, kind, method) it is not secret, so ``token_field``, ``password_env`` and
    ``auth_type`` stay visible. Plural words are not matched (``max_tokens`` is visible),
    nor is a bare ``key`` (the upsert ``key`` of a sink is not a secret).
    """
    words = _words(name)
    if not words or (len(words) > 1 and words[-1] in _NAMING_SUFFIXES):
        return False
    if any(w in _SECRET_WORDS for w in words):
        return True
    return any(a + b in _SECRET_PAIRS for a, b in itertools.pairwise(words))


def _replace_query(match: re.Match[str]) -> str:
    if match.group("value") and is_secret_key(match.group("name")):
        return match.group("head") + REDACTED
    return match.group(0)


def redact_text(s: str) -> str:
    """Return ``s`` with secrets embedded in URLs replaced by :data:`REDACTED`.

    * the password of every ``scheme://user:password@host`` (also ``redis://:password@host``)
      becomes ``***``; the user name and the rest of the URL stay;
    * the value of a query parameter whose name :func:`is_secret_key` (``?token=abc``,
      ``&password=x``) becomes ``***``.

    Text without such URLs is returned unchanged.
    """
    if "://" not in s and "=" not in s:
        return s
    out = _URL_PASSWORD_RE.sub(lambda m: m.group("head") + REDACTED + "@", s)
    if "=" in out:
        out = _QUERY_PARAM_RE.sub(_replace_query, out)
    return out


_SCALARS = (int, float, type(None))
_MAPPINGS = (dict, Mapping)  # dict first: exact, without the ABC's Python-level check


def _redact(value: Any, path: str, names: frozenset[str], paths: frozenset[str]) -> Any:
    # dotted paths are built only when some secret key is a path (log fields give none)
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, _SCALARS):  # before the Mapping check, a Python-level ABC call
        return value
    if isinstance(value, _MAPPINGS):
        out: dict[Any, Any] = {}
        for key, item in value.items():
            name = str(key)
            sub = (f"{path}.{name}" if path else name) if paths else ""
            secret = name.lower() in names or (paths and sub.lower() in paths) or is_secret_key(name)
            out[key] = REDACTED if item is not None and secret else _redact(item, sub, names, paths)
        return out
    if isinstance(value, list | tuple):
        return [
            _redact(item, (f"{path}.{i}" if path else str(i)) if paths else "", names, paths)
            for i, item in enumerate(value)
        ]
    return value


def redact(value: Any, secret_keys: Iterable[str] = ()) -> Any:
    """Return a redacted deep copy of plain data ``value``.

    Mappings become new ``dict``s and lists/tuples new ``list``s; the value of a key is
    replaced by :data:`REDACTED` (whole, even when it is a mapping) when the key's name is
    in ``secret_keys``, when its dotted path from the top (``"sink.url"``, ``"steps.0.token"``)
    is in ``secret_keys``, or when :func:`is_secret_key` says so; matching ignores case.
    A secret key whose value is ``None`` stays ``None`` (there is nothing to hide). Every
    other string goes through :func:`redact_text`. Other scalars are returned as they are.
    """
    keys = [k.lower() for k in secret_keys]
    names = frozenset(k for k in keys if "." not in k)
    paths = frozenset(k for k in keys if "." in k)
    return _redact(value, "", names, paths)
