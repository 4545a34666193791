"""The schedule database URL, read from Secrets Manager or SSM Parameter Store once per
execution environment — never from, or into, a plain environment variable.

A function's environment variables are shown to anyone allowed to read its configuration
(``lambda:GetFunctionConfiguration``, the console), so the SAM template puts there only
*where* the URL is; the function's role may read that one secret or parameter:

=================================  ==============================================================
``ADF_DATABASE_URL_SECRET``        a Secrets Manager secret (ARN, or name in the function's region).
                                   Its ``SecretString`` is the URL; or a JSON object with ``url``;
                                   or an RDS database secret (``host``, ``port``, ``dbname``,
                                   ``username``, ``password``; engine PostgreSQL)
``ADF_DATABASE_URL_PARAMETER``     an SSM parameter (name or ARN): a ``SecureString`` (decrypted)
                                   or a ``String`` holding the URL
``ADF_DATABASE_URL``               the URL itself: local runs and tests, where there is no store
=================================  ==============================================================

:func:`database_url` reads the store on its first call in an execution environment (its cold
start) and keeps the URL in this module for the warm invocations that follow; it never writes
the URL to ``os.environ``, a log line or an error message. No configuration at all is an
error (:class:`DatabaseUrlError`), not an empty SQLite file in ``/tmp``: a heartbeat that
ticks a throwaway schedule would "succeed" while running nothing.

boto3 is imported on the first read (the Lambda runtime provides it); a client honours
``AWS_ENDPOINT_URL`` (moto in the tests). After the secret is rotated, new execution
environments read the new value; :func:`forget` makes this one read it again.

Example::

    from active_data_flow.lambda_app.secrets import database_url
    store = SqlScheduleStore(database_url())
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

__all__ = [
    "ENV_PARAMETER",
    "ENV_SECRET",
    "ENV_URL",
    "DatabaseUrlError",
    "database_url",
    "forget",
]

ENV_SECRET = "ADF_DATABASE_URL_SECRET"
ENV_PARAMETER = "ADF_DATABASE_URL_PARAMETER"
ENV_URL = "ADF_DATABASE_URL"

_HOW = (
    f"set {ENV_SECRET} (a Secrets Manager secret; template parameter DatabaseUrlSecretArn) or "
    f"{ENV_PARAMETER} (an SSM SecureString; template parameter DatabaseUrlParameterName), "
    f"or {ENV_URL} for a local run"
)

_cache: dict[tuple[str, str], str] = {}
_lock = threading.Lock()


class DatabaseUrlError(RuntimeError):
    """The schedule database URL is not configured or cannot be read. The message names the
    secret or parameter and what to fix, never the URL."""


def database_url(environ: Mapping[str, str] | None = None) -> str:
    """The schedule database URL (see the module doc for where it comes from).

    Read from the store at most once per secret / parameter while this module lives; raises
    :class:`DatabaseUrlError` when nothing or two sources are configured, or the store refuses.
    """
    env = os.environ if environ is None else environ
    secret = (env.get(ENV_SECRET) or "").strip()
    parameter = (env.get(ENV_PARAMETER) or "").strip()
    plain = (env.get(ENV_URL) or "").strip()
    given = [name for name, value in ((ENV_SECRET, secret), (ENV_PARAMETER, parameter), (ENV_URL, plain)) if value]
    if len(given) > 1:
        raise DatabaseUrlError(f"the schedule database is configured twice ({' and '.join(given)}): keep one")
    if plain:
        return plain
    if not (secret or parameter):
        raise DatabaseUrlError(f"no schedule database is configured: {_HOW}")
    key = ("secretsmanager", secret) if secret else ("ssm", parameter)
    with _lock:
        url = _cache.get(key)
        if url is None:
            url = _cache[key] = _read(*key)
        return url


def forget() -> None:
    """Drop the URLs read so far: the next :func:`database_url` reads the store again."""
    with _lock:
        _cache.clear()


# --------------------------------------------------------------------------- reading


def _region(ref: str) -> str | None:
    """The region of an ARN (``arn:aws:secretsmanager:eu-west-1:…``), else the function's
    (``AWS_REGION``, which Lambda sets; older botocore reads only ``AWS_DEFAULT_REGION``)."""
    parts = ref.split(":")
    if ref.startswith("arn:") and len(parts) > 5 and parts[3]:
        return parts[3]
    return os.environ.get("AWS_REGION") or None


def _read(service: str, ref: str) -> str:
    what = f"Secrets Manager secret {ref}" if service == "secretsmanager" else f"SSM parameter {ref}"
    try:
        import boto3
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:
        raise DatabaseUrlError(
            f"reading the schedule database URL from the {what} needs boto3 (the Lambda runtime has it; "
            "locally: pip install boto3)"
        ) from None
    try:
        client: Any = boto3.client(service, region_name=_region(ref))  # type: ignore[call-overload]
        if service == "secretsmanager":
            response = client.get_secret_value(SecretId=ref)
            raw = response.get("SecretString")
        else:
            response = client.get_parameter(Name=ref, WithDecryption=True)
            raw = response["Parameter"]["Value"]
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = str(error.get("Code") or "error")
        hint = ""
        if code in ("AccessDeniedException", "AccessDenied"):
            action = "secretsmanager:GetSecretValue" if service == "secretsmanager" else "ssm:GetParameter"
            hint = f" (the function's role needs {action} on it, and kms:Decrypt on a customer managed key)"
        raise DatabaseUrlError(f"cannot read the schedule database URL from the {what}: {code}{hint}") from None
    except BotoCoreError as exc:
        raise DatabaseUrlError(
            f"cannot read the schedule database URL from the {what}: {type(exc).__name__}: {exc}"
        ) from None
    if not isinstance(raw, str) or not raw.strip():
        raise DatabaseUrlError(f"the {what} is empty (or binary): store the database URL as its text value")
    return _url_of(raw.strip(), what)


def _url_of(value: str, what: str) -> str:
    """The URL in a stored value: the URL itself, ``{"url": …}``, or an RDS database secret."""
    if not value.startswith("{"):
        if "://" not in value:
            raise DatabaseUrlError(
                f"the {what} does not hold a database URL (expected postgresql+psycopg://user:password@host/db, "
                'a JSON object with "url", or an RDS database secret)'
            )
        return value
    try:
        data = json.loads(value)
    except ValueError:
        raise DatabaseUrlError(f"the {what} starts like JSON but is not valid JSON") from None
    if not isinstance(data, dict):
        raise DatabaseUrlError(f"the {what} holds JSON that is not an object")
    url = data.get("url") or data.get("database_url")
    if isinstance(url, str) and "://" in url:
        return url.strip()
    engine = str(data.get("engine") or "postgres").lower()
    if "postgres" not in engine:
        raise DatabaseUrlError(f"the {what} is a {engine!r} database secret: the schedule needs PostgreSQL")
    missing = [k for k in ("host", "username", "password") if not data.get(k)]
    if missing:
        raise DatabaseUrlError(
            f"the {what} lacks {', '.join(missing)}: store a JSON object with \"url\", or host, port, dbname, "
            "username and password"
        )
    port = data.get("port") or 5432
    dbname = data.get("dbname") or "postgres"
    user = quote(str(data["username"]), safe="")
    password = quote(str(data["password"]), safe="")
    return f"postgresql+psycopg://{user}:{password}@{data['host']}:{port}/{quote(str(dbname), safe='')}"
