"""The Lambda flow host and the Powertools objects every handler shares.

:class:`LambdaHost` is a :class:`handlers.invoke.LocalHost` configured from the function's
environment (set by the SAM template's parameters):

=========================  ==========================================================================
``ADF_FLOWS_DIR``          directory of flow specs bundled in the deployment package; default
                           ``flows/`` next to ``lambda_app/`` when it exists, else ``/var/task/flows``
``ADF_STATE_URL``          the key-value / state store (``core.state.open_state_store``):
                           ``memory://`` (default), ``redis://…``, ``sqlite:////tmp/adf/state.db``
``ADF_STATE_DIR``          a *writable* directory (``/tmp/adf`` on Lambda): runs persist checkpoints,
                           run records and dead-letter files there; unset or not writable: no files
``ADF_ALLOW_PAYLOAD_SPEC`` ``true``: an HTTP/SQS payload may carry a whole flow spec (default false)
``ADF_VAR_<NAME>``         the **manifest** configuration layer (SAM parameters): variable
                           ``adf_<name>`` under :mod:`handlers.confignames`' rules —
                           ``ADF_VAR_SINK_TABLE`` → ``sink.table``, ``ADF_VAR_JSON`` → ``adf_json``,
                           ``ADF_VAR_FLOW_ORDERS_SINK_TABLE`` → ``sink.table`` of flow ``orders``
``ADF__SINK__TABLE``       the **env** layer, as everywhere (:mod:`core.config`)
=========================  ==========================================================================

A host is built per invocation (cheap: the flow directory is re-read only when it changes,
kept in a module cache keyed by the environment that shapes it), so tests may change the
environment between calls.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

from core.state import open_state_store
from handlers.invoke_base import Invocation, LocalHost
from lambda_app.tracing import make_tracer

__all__ = ["VARIABLE_ENV_PREFIX", "LambdaHost", "count_run", "flows_dir", "get_host", "logger", "metrics", "tracer"]

SERVICE = "adf"
NAMESPACE = "ActiveDataFlow"
#: environment variables carrying manifest-layer variables: ``ADF_VAR_SINK_TABLE`` → ``adf_sink_table``
VARIABLE_ENV_PREFIX = "ADF_VAR_"

logger = Logger(service=SERVICE)
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)
tracer = make_tracer(SERVICE)

_TRUE = {"1", "true", "yes", "on"}


def flows_dir(environ: Mapping[str, str] | None = None) -> str:
    """``ADF_FLOWS_DIR``, else ``flows/`` beside ``lambda_app/`` if it exists, else ``/var/task/flows``."""
    env = os.environ if environ is None else environ
    given = env.get("ADF_FLOWS_DIR")
    if given:
        return os.path.abspath(given)
    bundled = Path(__file__).resolve().parent.parent / "flows"
    return str(bundled) if bundled.is_dir() else "/var/task/flows"


def manifest_variables(environ: Mapping[str, str]) -> dict[str, str]:
    """``{"adf_sink_table": "t"}`` from ``ADF_VAR_SINK_TABLE=t`` (names lower-cased)."""
    n = len(VARIABLE_ENV_PREFIX)
    return {
        "adf_" + k[n:].lower(): v for k, v in environ.items() if k.upper().startswith(VARIABLE_ENV_PREFIX) and k[n:]
    }


def _writable(path: str) -> bool:
    try:
        os.makedirs(path, exist_ok=True)
    except OSError:
        return False
    return os.access(path, os.W_OK)


class LambdaHost(LocalHost):
    """Flows from the bundled directory (and the payload when allowed), the store named by
    ``ADF_STATE_URL``, the ``ADF_VAR_*`` variables, ``persist`` only with a writable
    ``ADF_STATE_DIR`` (see the module doc)."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = dict(os.environ if environ is None else environ)
        state_dir = env.get("ADF_STATE_DIR") or ""
        persist = bool(state_dir) and _writable(state_dir)
        super().__init__(
            flows_dir(env),
            store=open_state_store(env.get("ADF_STATE_URL") or "memory://", state_dir=state_dir or None),
            state_dir=state_dir if persist else "/tmp/adf",
            variables=manifest_variables(env),
            environ=None if environ is None else env,
            persist=persist,
            allow_payload_spec=(env.get("ADF_ALLOW_PAYLOAD_SPEC") or "").strip().lower() in _TRUE,
        )


_KEYS = ("ADF_FLOWS_DIR", "ADF_STATE_URL", "ADF_STATE_DIR", "ADF_ALLOW_PAYLOAD_SPEC")
_hosts: dict[Any, LambdaHost] = {}
_lock = threading.Lock()


def get_host() -> LambdaHost:
    """The host for the current environment, kept across warm invocations."""
    key = (
        tuple(os.environ.get(k) for k in _KEYS),
        tuple(sorted((k, v) for k, v in os.environ.items() if k.upper().startswith(VARIABLE_ENV_PREFIX))),
    )
    with _lock:
        host = _hosts.get(key)
        if host is None:
            host = _hosts[key] = LambdaHost()
        return host


def count_run(invocation: Invocation | None, *, ok: bool) -> None:
    """Metrics of one flow run: ``FlowRuns`` / ``FlowFailures``, ``RecordsIn``, ``RecordsOut``, ``DeadLetters``."""
    metrics.add_metric(name="FlowRuns" if ok else "FlowFailures", unit=MetricUnit.Count, value=1)
    if invocation is not None:
        s = invocation.summary
        metrics.add_metric(name="RecordsIn", unit=MetricUnit.Count, value=s.records_in)
        metrics.add_metric(name="RecordsOut", unit=MetricUnit.Count, value=s.records_out)
        metrics.add_metric(name="DeadLetters", unit=MetricUnit.Count, value=s.dead_letters)
