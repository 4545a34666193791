"""Secret redaction for logs, run records and ``adf config explain``, and masking for reads.

The tools, all pure functions of the standard library:

* :func:`is_secret_key` decides from a key *name* whether its value is a secret;
* :func:`redact_text` hides passwords embedded in URLs (``scheme://user:pass@host``) and
  secret-named query parameters (``?token=...``) inside any string;
* :func:`redact` returns a redacted deep copy of nested plain data (mappings, lists).
* :func:`mask` and :func:`unmask` are the same rules for values that go out *and come back*:
  a stored flow configuration shown by the management API or the dashboard has its secrets
  replaced by :data:`MASK`; when it is saved again, :func:`unmask` puts the stored secret back
  wherever the masked value came back unchanged (secrets are write-only).
  :func:`active_data_flow.spec.flow_secret_keys` names the secret attributes a flow configuration's connectors and
  steps declare (``Attribute(..., secret=True)``), for both.

Redaction replaces a secret with :data:`REDACTED` (``"***"``); it never raises on odd input.

Example::

    stored = {"sink": {"type": "sql", "url": "postgresql://app:pw@db/x", "table": "t"}}
    shown = mask(stored, flow_secret_keys(stored))      # {"sink": {..., "url": "********", ...}}
    saved, problems = unmask(shown, stored, flow_secret_keys(stored))
    assert saved == stored and problems == []
"""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["MASK", "REDACTED", "is_secret_key", "mask", "redact", "redact_text", "unmask"]

#: What a secret is replaced with.
REDACTED = "***"
#: What a secret is replaced with in a value that may be sent back (see :func:`unmask`): long
#: enough not to be mistaken for a real value.
MASK = "********"

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


def _hide_text(s: str, replacement: str) -> str:
    if "://" not in s and "=" not in s:
        return s
    out = _URL_PASSWORD_RE.sub(lambda m: m.group("head") + replacement + "@", s)
    if "=" in out:

        def query(match: re.Match[str]) -> str:
            if match.group("value") and is_secret_key(match.group("name")):
                return match.group("head") + replacement
            return match.group(0)

        out = _QUERY_PARAM_RE.sub(query, out)
    return out


def redact_text(s: str) -> str:
    """Return ``s`` with secrets embedded in URLs replaced by :data:`REDACTED`.

    * the password of every ``scheme://user:password@host`` (also ``redis://:password@host``)
      becomes ``***``; the user name and the rest of the URL stay;
    * the value of a query parameter whose name :func:`is_secret_key` (``?token=abc``,
      ``&password=x``) becomes ``***``.

    Text without such URLs is returned unchanged.
    """
    return _hide_text(s, REDACTED)


_SCALARS = (int, float, type(None))
_MAPPINGS = (dict, Mapping)  # dict first: exact, without the ABC's Python-level check


def _redact(value: Any, path: str, names: frozenset[str], paths: frozenset[str], replacement: str = REDACTED) -> Any:
    # dotted paths are built only when some secret key is a path (log fields give none)
    if isinstance(value, str):
        return _hide_text(value, replacement)
    if isinstance(value, _SCALARS):  # before the Mapping check, a Python-level ABC call
        return value
    if isinstance(value, _MAPPINGS):
        out: dict[Any, Any] = {}
        for key, item in value.items():
            name = str(key)
            sub = (f"{path}.{name}" if path else name) if paths else ""
            secret = name.lower() in names or (paths and sub.lower() in paths) or is_secret_key(name)
            out[key] = replacement if item is not None and secret else _redact(item, sub, names, paths, replacement)
        return out
    if isinstance(value, list | tuple):
        return [
            _redact(item, (f"{path}.{i}" if path else str(i)) if paths else "", names, paths, replacement)
            for i, item in enumerate(value)
        ]
    return value


def _key_sets(secret_keys: Iterable[str]) -> tuple[frozenset[str], frozenset[str]]:
    keys = [k.lower() for k in secret_keys]
    return frozenset(k for k in keys if "." not in k), frozenset(k for k in keys if "." in k)


def redact(value: Any, secret_keys: Iterable[str] = ()) -> Any:
    """Return a redacted deep copy of plain data ``value``.

    Mappings become new ``dict``s and lists/tuples new ``list``s; the value of a key is
    replaced by :data:`REDACTED` (whole, even when it is a mapping) when the key's name is
    in ``secret_keys``, when its dotted path from the top (``"sink.url"``, ``"steps.0.token"``)
    is in ``secret_keys``, or when :func:`is_secret_key` says so; matching ignores case.
    A secret key whose value is ``None`` stays ``None`` (there is nothing to hide). Every
    other string goes through :func:`redact_text`. Other scalars are returned as they are.
    """
    names, paths = _key_sets(secret_keys)
    return _redact(value, "", names, paths)


def mask(value: Any, secret_keys: Iterable[str] = ()) -> Any:
    """:func:`redact` with :data:`MASK` for the secrets: the copy of ``value`` to show to a
    user who may edit it and send it back to :func:`unmask`."""
    names, paths = _key_sets(secret_keys)
    return _redact(value, "", names, paths, MASK)


def _restore(new: Any, masked: Any, stored: Any) -> Any:
    if isinstance(new, str):
        # a string that comes back exactly as the mask showed it: the stored value it hid
        return stored if isinstance(masked, str) and new == masked and masked != stored else new
    if isinstance(new, Mapping) and isinstance(masked, Mapping) and isinstance(stored, Mapping):
        return {k: _restore(v, masked[k], stored[k]) if k in masked and k in stored else v for k, v in new.items()}
    if isinstance(new, list) and isinstance(masked, list) and isinstance(stored, list | tuple):
        return [_restore(v, masked[i], stored[i]) if i < min(len(masked), len(stored)) else v
                for i, v in enumerate(new)]
    return new


def _masked_leftovers(value: Any, path: str, out: list[str]) -> None:
    stack: list[tuple[Any, str]] = [(value, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            if MASK in item:
                out.append(where or "value")
        elif isinstance(item, Mapping):
            stack.extend((v, f"{where}.{k}" if where else str(k)) for k, v in item.items())
        elif isinstance(item, list | tuple):
            stack.extend((v, f"{where}.{i}" if where else str(i)) for i, v in enumerate(item))


def unmask(value: Any, stored: Any, secret_keys: Iterable[str] = ()) -> tuple[Any, list[str]]:
    """``value`` — an edited copy of what :func:`mask` showed of ``stored`` (None for a new
    value) — with the stored secrets put back: every string that comes back exactly as it
    was shown masked (at the same place) is replaced by the stored value it hid, so a
    secret left alone is kept and a secret typed anew replaces it. ``secret_keys`` are those
    the masking used (of ``stored``).

    Returns ``(value, problems)``: a problem for each place where :data:`MASK` is still in
    the result — a masked value that was edited, moved or copied, which would store the mask
    instead of the secret."""
    restored = value if stored is None else _restore(value, mask(stored, secret_keys), stored)
    leftovers: list[str] = []
    _masked_leftovers(restored, "", leftovers)
    problems = [
        f"{where}: holds the masked secret {MASK}: leave a masked value exactly as it is shown (at its place) "
        "to keep the stored secret, or type the secret itself"
        for where in sorted(leftovers)
    ]
    return restored, problems
