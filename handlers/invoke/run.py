"""Preparing and running a flow for a request, a message, an event or a tick.

Standard library only at module level (this runs inside a Spin component).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from active_data_flow.attributes import Attribute
from active_data_flow.config import resolve_flow_config
from active_data_flow.connectors.memory import ResponseRecords, ResponseSink
from active_data_flow.errors import ConfigError, SpecError
from active_data_flow.handlers.confignames import variables_config
from active_data_flow.handlers.invoke.errors import BadRequest, NotFound, failure_message
from active_data_flow.handlers.invoke.host import FlowHost, flow_names, lookup_spec
from active_data_flow.handlers.invoke.params import InvalidParams, RequestParams, request_values
from active_data_flow.ids import new_id, new_run_id
from active_data_flow.loader import LoadedFlow, load_flow
from active_data_flow.redact import REDACTED
from active_data_flow.spec import parse_params
from active_data_flow.state import StateStore

if TYPE_CHECKING:
    from active_data_flow.engine import Progress, RunSummary



@dataclass
class PreparedRun:
    """A flow resolved and validated, ready to run (:func:`prepare_flow`)."""

    flow: str
    loaded: LoadedFlow
    run_id: str
    request_id: str
    #: ``adf_*`` variables that mapped to no configuration path of this flow
    ignored_variables: list[str] = field(default_factory=list)


@dataclass
class Invocation:
    """A finished run: its summary and what its ``response`` sink kept."""

    flow: str
    request_id: str
    summary: RunSummary
    response: ResponseRecords | None = None

    @property
    def ok(self) -> bool:
        return self.summary.ok

    @property
    def out_of_memory(self) -> bool:
        return self.summary.error_type == "MemoryError"

    def body(self) -> dict[str, Any]:
        """The JSON answer: the summary (no backtrace), ``request_id``, and ``records``,
        ``records_total``, ``records_truncated`` when the sink is ``response``."""
        body = self.summary.to_dict()
        body.pop("backtrace", None)
        body["request_id"] = self.request_id
        if self.out_of_memory:
            body["error"] = failure_message(self.flow, self.summary)
        if self.response is not None:
            body["records"] = self.response.records
            body["records_total"] = self.response.total
            body["records_truncated"] = self.response.truncated
        return body


def declared_params(
    host: FlowHost,
    raw: Mapping[str, Any],
    store: StateStore | None,
    extra: list[tuple[str, Mapping[str, Any], str]],
) -> tuple[Attribute, ...]:
    """The parameters the flow declares once its operators' layers are applied (a variable or
    the environment may change a declaration, as any other part of the spec)."""
    resolved = resolve_flow_config(raw, store=store, environ=dict(host.environ()), extra=extra)
    declared, _problems = parse_params(resolved.get("params"))  # the spec's own problems: reported by the load
    return declared


def prepare_flow(
    host: FlowHost,
    name: str,
    *,
    params: RequestParams | Mapping[str, Any] | None = None,
    records: Any = None,
    object_url: str | None = None,
    request_id: str | None = None,
    run_id: str | None = None,
) -> PreparedRun:
    """Resolve flow ``name`` with every operator layer, take what the request gives, validate
    (nothing runs yet).

    What a request may give (:mod:`active_data_flow.handlers.invoke.params`): ``params`` — values of the
    parameters the flow declares (a mapping, or a :class:`~active_data_flow.handlers.invoke.params.RequestParams`
    built by a transport from its body, query and headers, refused keys included); ``records`` —
    the records of a ``payload`` source (a list); ``object_url`` — the object an object-created
    event names, read by the flow's ``file`` source. Raises :class:`NotFound`,
    :class:`~active_data_flow.handlers.invoke.params.RefusedRequest` (400: anything else),
    :class:`~active_data_flow.handlers.invoke.params.InvalidParams` (422: a parameter's value),
    :class:`BadRequest` or :class:`~active_data_flow.errors.ConfigError` (422: every problem).
    """
    found = lookup_spec(host, name)
    if found is None:
        raise NotFound(f"no flow named {name!r}", flows=flow_names(host))
    return prepare(host, name, found, params, records, request_id, run_id, object_url)


def prepare(
    host: FlowHost,
    name: str,
    raw: dict[str, Any],
    params: RequestParams | Mapping[str, Any] | None,
    records: Any,
    request_id: str | None,
    run_id: str | None,
    object_url: str | None = None,
) -> PreparedRun:
    request = params if isinstance(params, RequestParams) else RequestParams.from_values(params)
    if records is not None and not isinstance(records, list):
        raise BadRequest(f"'records' must be a JSON array, got {type(records).__name__}")
    flow_name = str(raw.get("name") or name)
    additions, ignored = variables_config(host.variables(), flow_name, raw)
    extra: list[tuple[str, Mapping[str, Any], str]] = [("manifest", values, origin) for values, origin in additions]
    store = host.store()
    given: dict[str, Any] | None = None
    if not request.empty:
        given = request_values(flow_name, declared_params(host, raw, store, extra), request)
    try:
        loaded = load_flow(
            raw,
            params=given,
            environ=dict(host.environ()),
            store=store,
            use_store=store is not None,
            extra=extra,
        )
    except SpecError as exc:
        if any(p.startswith("params") for p in exc.problems):
            raise InvalidParams(flow_name, exc.problems, declared_params(host, raw, store, extra)) from None
        raise
    if records is not None:
        source_type = loaded.spec.source.get("type")
        if source_type != "payload":
            raise ConfigError(
                f"flow {name!r}",
                [f"records were given but the flow's source is {source_type!r}; only a 'payload' source takes records"],
            )
        loaded.spec.source["records"] = records
    if object_url is not None:
        source_type = loaded.spec.source.get("type")
        if source_type != "file":
            raise ConfigError(
                f"flow {name!r}",
                [f"the event names the object {object_url} but the flow's source is {source_type!r}; "
                 "only a 'file' source reads the object an event names"],
            )
        loaded.spec.source["path"] = object_url
    return PreparedRun(
        flow=loaded.spec.name,
        loaded=loaded,
        run_id=run_id or new_run_id(),
        request_id=request_id or new_id(),
        ignored_variables=ignored,
    )


ProgressCallback = Callable[["Progress"], None]


def execute_flow(host: FlowHost, prepared: PreparedRun, *, on_progress: ProgressCallback | None = None) -> Invocation:
    """Run a prepared flow on its runtime (``active_data_flow.runtime.run``) and collect its response records.

    ``persist=host.persist``; parallelism is 1 when the host does not persist or the sink is
    ``response`` (its records live in this process). A failing flow is a summary with
    ``status: failed`` (a ``MemoryError`` included), not an exception.
    """
    from active_data_flow.runtime import run as run_on_runtime

    spec = prepared.loaded.spec
    responds = spec.sink.get("type") == "response"
    if not host.persist or responds:
        spec.runtime["parallelism"] = 1
    try:
        summary = run_on_runtime(
            spec,
            state_dir=host.state_dir,
            on_progress=on_progress,
            run_id=prepared.run_id,
            store=prepared.loaded.store,
            persist=host.persist,
            # a request's records are its source: an unfinished run of another request (or of
            # the flow before it was changed) is not resumed by this one
            on_spec_change="fresh",
        )
    except BaseException:
        if responds:
            ResponseSink.pop(prepared.run_id)
        raise
    response: ResponseRecords | None = None
    if responds:
        # A persisting host may have resumed an earlier run: its records are under that run id.
        response = ResponseSink.pop(summary.run_id)
        if summary.run_id != prepared.run_id:
            ResponseSink.pop(prepared.run_id)
        if response is None:
            response = ResponseRecords(limit=int(spec.sink.get("limit") or 0))
    return Invocation(flow=prepared.flow, request_id=prepared.request_id, summary=summary, response=response)


def invoke_flow(
    host: FlowHost,
    name: str,
    *,
    params: RequestParams | Mapping[str, Any] | None = None,
    records: Any = None,
    object_url: str | None = None,
    on_progress: ProgressCallback | None = None,
    request_id: str | None = None,
) -> Invocation:
    """:func:`prepare_flow` then :func:`execute_flow`."""
    prepared = prepare_flow(host, name, params=params, records=records, object_url=object_url, request_id=request_id)
    return execute_flow(host, prepared, on_progress=on_progress)


def run_named_flow(
    host: FlowHost,
    name: str,
    *,
    params: RequestParams | Mapping[str, Any] | None = None,
    records: Any = None,
    on_progress: ProgressCallback | None = None,
) -> RunSummary:
    """Run flow ``name`` and return its summary (records of a ``response`` sink are dropped:
    use :func:`invoke_flow` to get them). Raises as :func:`prepare_flow` does; a failing
    flow is ``summary.status == "failed"``."""
    return invoke_flow(host, name, params=params, records=records, on_progress=on_progress).summary


def describe_flow(host: FlowHost, name: str, *, params: RequestParams | Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The resolved configuration of a flow (secrets redacted), where each value comes from,
    its declared parameters and their values for ``params`` (secret ones redacted)."""
    from active_data_flow.spec import describe_params

    prepared = prepare_flow(host, name, params=params)
    resolved = prepared.loaded.config
    spec = prepared.loaded.spec
    secret = {a.name for a in spec.param_attributes if a.secret}
    return {
        "name": prepared.flow,
        "description": spec.description,
        "config": resolved.as_dict_redacted(),
        "explain": [
            {
                "path": e.path,
                "value": e.value,
                "layer": e.layer,
                "origin": e.origin,
                "overridden": [{"layer": layer, "origin": origin} for layer, origin in e.overridden],
            }
            for e in resolved.explain()
        ],
        "declared_params": describe_params(spec.param_attributes),
        "params": {k: REDACTED if k in secret and v is not None else v for k, v in spec.params.items()},
        "ignored_variables": prepared.ignored_variables,
    }


def list_flows(host: FlowHost) -> list[dict[str, Any]]:
    """``[{name, description, source, sink}]`` of every flow the host knows."""
    out = []
    for name in flow_names(host):
        raw = lookup_spec(host, name) or {}
        source, sink = raw.get("source"), raw.get("sink")
        out.append(
            {
                "name": name,
                "description": str(raw.get("description") or ""),
                "source": source.get("type") if isinstance(source, Mapping) else None,
                "sink": sink.get("type") if isinstance(sink, Mapping) else None,
            }
        )
    return out
