"""Transport-neutral flow invocation: what the Spin components (and the Lambda handlers) call.

A target adapter turns its event into one call here and turns the result back into its own
reply; everything else — which flow, which configuration, how it runs, what the answer and
the errors look like, what is logged — is decided once, in this module:

* :func:`handle_http` — ``GET /flows``, ``GET /flows/{name}``, ``GET|POST /flows/{name}/run``
  (JSON, or NDJSON progress events with ``?stream=true`` / ``Accept: application/x-ndjson``);
* :func:`handle_message` — a Redis message or an MQTT message: route → run → publish the result;
* :func:`handle_cron` — one heartbeat tick (:func:`active_data_flow.handlers.scheduler.tick`, sync mode);
* :func:`run_named_flow` / :func:`invoke_flow` — the run itself, for any other trigger.

The environment of a run comes from a :class:`FlowHost` (the Spin host implementation lives
in ``spin_app/``; :class:`LocalHost` is the native one, for tests and ``adf serve``).

Configuration layers — the operators' (lowest first, as everywhere — :mod:`active_data_flow.loader`)::

    defaults < manifest: the spec, then host.variables() (spin.toml variables / SAM parameters)
             < kv: config/<flow> in host.store()
             < env: host.environ() (ADF__SINK__TABLE, ADF_<FLOW>__SINK__TABLE)

How variable *names* map to config paths: :mod:`active_data_flow.handlers.confignames`. A request — HTTP
body, query string, headers; a Redis, MQTT or SQS message; an S3 event — never reaches these
layers: it may give only the values of the parameters the flow declares and its records
(:mod:`active_data_flow.handlers.invoke.params`; anything else is refused with 400 naming it). Records
(``{"records": [...]}`` or a bare JSON array) become the run's ``source.records`` when the
flow's source is ``payload``; they are set after the layers are resolved (records are data:
running a thousand of them through the layer bookkeeping costs ~30 ms natively) and a flow
with another source refuses them (422).

HTTP routes, status codes and streaming: :mod:`active_data_flow.handlers.invoke.http`. Redis / MQTT
messages: :mod:`active_data_flow.handlers.invoke.messages`. Cron ticks: :mod:`active_data_flow.handlers.invoke.cron`. All of
their public names are importable from here.

Logging: one JSON line per request/message/tick on the ``adf.invoke`` logger with
``request_id``, ``trigger``, ``status``, ``duration_ms``, ``flow``, ``run_id``, counts and
``memory_bytes`` when the host reports it; errors carry the backtrace (log only). The
engine's own lines carry the ``run_id``. Call :func:`active_data_flow.logs.configure` once at start-up
(``stream=sys.stdout`` inside Spin) to get them as JSON lines.

Standard library only at module level (this runs inside a Spin component).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from active_data_flow.handlers.invoke.errors import (
    BadRequest,
    FlowFailed,
    Forbidden,
    InvokeError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    PublishUnsupported,
    status_for,
)
from active_data_flow.handlers.invoke.host import (
    KV_FLOW_PREFIX,
    ErrorContext,
    ErrorHandler,
    FlowHost,
    LocalHost,
    flow_names,
    lookup_spec,
)
from active_data_flow.handlers.invoke.http import NDJSON, RESERVED_QUERY, handle_http, refuse_http
from active_data_flow.handlers.invoke.messages import (
    KINDS,
    default_reply_channel,
    handle_message,
    mqtt_topic_matches,
    parse_routes,
    route_for,
)
from active_data_flow.handlers.invoke.params import InvalidParams, RefusedRequest, RequestParams
from active_data_flow.handlers.invoke.payload import TriggerPayload, parse_trigger_payload
from active_data_flow.handlers.invoke.run import (
    Invocation,
    PreparedRun,
    describe_flow,
    execute_flow,
    invoke_flow,
    list_flows,
    prepare_flow,
    run_named_flow,
)
from active_data_flow.handlers.streaming import StreamingResponse

if TYPE_CHECKING:
    from active_data_flow.handlers.invoke.cron import handle_cron, host_executor

__all__ = [
    "KINDS",
    "KV_FLOW_PREFIX",
    "NDJSON",
    "RESERVED_QUERY",
    "BadRequest",
    "ErrorContext",
    "ErrorHandler",
    "FlowFailed",
    "FlowHost",
    "Forbidden",
    "InvalidParams",
    "Invocation",
    "InvokeError",
    "LocalHost",
    "MethodNotAllowed",
    "NotFound",
    "PayloadTooLarge",
    "PreparedRun",
    "PublishUnsupported",
    "RefusedRequest",
    "RequestParams",
    "StreamingResponse",
    "TriggerPayload",
    "default_reply_channel",
    "describe_flow",
    "execute_flow",
    "flow_names",
    "handle_cron",
    "handle_http",
    "handle_message",
    "host_executor",
    "invoke_flow",
    "list_flows",
    "lookup_spec",
    "mqtt_topic_matches",
    "parse_routes",
    "parse_trigger_payload",
    "prepare_flow",
    "refuse_http",
    "route_for",
    "run_named_flow",
    "status_for",
]


def __getattr__(name: str) -> Any:
    # The cron tick (and with it the scheduler and the schedule store) loads on first use: an
    # HTTP or message handler never needs it, and a Spin component other than cron leaves it out.
    if name in ("handle_cron", "host_executor"):
        from active_data_flow.handlers.invoke import cron

        return getattr(cron, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
