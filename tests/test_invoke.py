"""active_data_flow.handlers.invoke over HTTP with a LocalHost: routes, configuration layers, declared parameters,
streaming, errors, logs. (What a request may not set is proven at length in test_request_safety.py.)"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from active_data_flow.connectors.memory import ResponseSink
from active_data_flow.handlers import streaming
from active_data_flow.handlers.http import Request, Response
from active_data_flow.handlers.invoke import (
    ErrorContext,
    FlowFailed,
    LocalHost,
    NotFound,
    StreamingResponse,
    handle_http,
    run_named_flow,
)
from active_data_flow.logs import JsonFormatter
from active_data_flow.record import Record
from active_data_flow.registry import registry
from active_data_flow.state import MemoryStateStore
from active_data_flow.step import ErrorHandler, Step

# --------------------------------------------------------------------------- test steps


class BoomStep(Step):
    """Fails the whole batch (not one record): the run fails."""

    def process_batch(self, records: list[Record], on_error: ErrorHandler) -> list[Record]:
        raise RuntimeError("boom: the step broke")


class OomStep(Step):
    """Runs out of memory on the batch."""

    def process_batch(self, records: list[Record], on_error: ErrorHandler) -> list[Record]:
        raise MemoryError("cannot allocate 1 GiB")


GATE = threading.Event()


class GateStep(Step):
    """From the second batch on, waits until the consumer has seen a progress event."""

    batches = 0

    def process_batch(self, records: list[Record], on_error: ErrorHandler) -> list[Record]:
        GateStep.batches += 1
        if GateStep.batches > 1 and not GATE.wait(timeout=10):
            raise TimeoutError("no progress event reached the consumer while the flow ran")
        return records


WRITTEN: list[bytes] = []
SEEN_AT_BATCH: list[int] = []


class ProbeStep(Step):
    """Notes how many chunks the client had received when each batch ran."""

    def process_batch(self, records: list[Record], on_error: ErrorHandler) -> list[Record]:
        SEEN_AT_BATCH.append(len(WRITTEN))
        return records


for _name, _cls in {"test_boom": BoomStep, "test_oom": OomStep, "test_gate": GateStep, "test_probe": ProbeStep}.items():
    registry.register("step", _name, _cls)


# --------------------------------------------------------------------------- fixtures


def specs(tmp_path: Path) -> dict[str, dict[str, Any]]:
    return {
        "echo": {
            "description": "doubles n and answers with the records",
            "source": {"type": "payload"},
            "steps": [{"type": "python", "function": "flowlib.steps:double"}],
            "sink": {"type": "response"},
            "runtime": {"batch_size": 2},
            "config": {"api_token": "s3cr3t-value"},
        },
        "numbers": {
            "source": {"type": "memory", "records": [{"n": i} for i in range(10)]},
            "params": {"below": {"type": "integer", "default": 100}},
            "steps": [{"type": "filter", "field": "n", "op": "lt", "value": "${params.below}"}],
            "sink": {"type": "file", "path": str(tmp_path / "numbers.jsonl")},
            "runtime": {"batch_size": 3},
        },
        "to_file": {
            "source": {"type": "payload"},
            "params": {"min_a": {"type": "integer", "default": 0}},
            "steps": [{"type": "filter", "field": "a", "op": "ge", "value": "${params.min_a}"}],
            "sink": {"type": "file", "path": str(tmp_path / "to_file.jsonl")},
        },
        "limited": {
            "description": "keeps the records whose n is below a declared parameter",
            "source": {"type": "payload"},
            "params": {
                "below": {"type": "integer", "default": 100, "help": "keep n below this"},
                "token": {"type": "string", "secret": True, "default": "s3cr3t-default"},
            },
            "steps": [{"type": "filter", "field": "n", "op": "lt", "value": "${params.below}"}],
            "sink": {"type": "response"},
            "runtime": {"batch_size": 2},
        },
        "failing": {"source": {"type": "payload"}, "steps": [{"type": "test_boom"}], "sink": {"type": "response"}},
        "oom": {"source": {"type": "payload"}, "steps": [{"type": "test_oom"}], "sink": {"type": "response"}},
        "gated": {
            "source": {"type": "payload"}, "steps": [{"type": "test_gate"}], "sink": {"type": "response"},
            "runtime": {"batch_size": 1},
        },
        "probed": {
            "source": {"type": "payload"}, "steps": [{"type": "test_probe"}], "sink": {"type": "response"},
            "runtime": {"batch_size": 1},
        },
    }


@pytest.fixture
def host(tmp_path: Path) -> Iterator[LocalHost]:
    h = LocalHost(specs(tmp_path), persist=False, environ={}, state_dir=tmp_path / "state")
    yield h
    h.close()


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def lines(self) -> list[dict[str, Any]]:
        fmt = JsonFormatter()
        return [json.loads(fmt.format(r)) for r in self.records]


@pytest.fixture
def logs() -> Iterator[Capture]:
    handler = Capture()
    logger = logging.getLogger("adf.invoke")
    logger.addHandler(handler)
    old = logger.level
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(old)


def get(path: str, headers: dict[str, str] | None = None, query: dict[str, str] | None = None) -> Request:
    return Request("GET", path, headers or {}, query or {})


def post(path: str, body: Any, headers: dict[str, str] | None = None, query: dict[str, str] | None = None) -> Request:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return Request("POST", path, headers or {}, query or {}, raw)


def answer(request: Request, host: LocalHost, **kw: Any) -> Response:
    response = handle_http(request, host, **kw)
    assert isinstance(response, Response), response
    assert response.headers["x-request-id"]
    json.loads(response.encoded())  # always JSON
    return response


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# --------------------------------------------------------------------------- routes


def test_get_flows_lists_names_and_descriptions(host: LocalHost) -> None:
    r = answer(get("/flows"), host)
    assert r.status == 200
    flows = {f["name"]: f for f in r.body["flows"]}  # type: ignore[call-overload]
    assert sorted(flows) == ["echo", "failing", "gated", "limited", "numbers", "oom", "probed", "to_file"]
    assert flows["echo"] == {
        "name": "echo", "description": "doubles n and answers with the records", "source": "payload", "sink": "response",
    }


def test_get_flow_shows_the_resolved_config_redacted_with_its_origins(tmp_path: Path) -> None:
    host = LocalHost(specs(tmp_path), persist=False, environ={"ADF_ECHO__RUNTIME__BATCH_SIZE": "7"})
    r = answer(get("/flows/echo"), host)
    assert r.status == 200
    body: Any = r.body
    assert body["config"]["runtime"]["batch_size"] == 7
    assert body["config"]["config"]["api_token"] == "***"
    assert "s3cr3t-value" not in json.dumps(body)
    explain = {e["path"]: e for e in body["explain"]}
    assert explain["runtime.batch_size"]["layer"] == "env"
    assert {"layer": "manifest", "origin": "payload spec"} in explain["runtime.batch_size"]["overridden"]
    assert explain["sink.limit"]["layer"] == "default"
    assert body["declared_params"] == [] and body["params"] == {}
    # the declared parameters, and their values for the query's (secret ones redacted)
    body = answer(get("/flows/limited", query={"below": "7"}), host).body
    assert body["params"] == {"below": 7, "token": "***"}
    assert body["declared_params"] == [
        {"name": "below", "type": "integer", "required": False, "default": 100, "help": "keep n below this"},
        {"name": "token", "type": "string", "required": False, "default": "***", "secret": True},
    ]
    assert "s3cr3t-default" not in json.dumps(body)
    host.close()


def test_get_run_takes_its_declared_parameters_from_the_query(host: LocalHost, tmp_path: Path) -> None:
    r = answer(get("/flows/numbers/run", query={"below": "4"}), host)
    assert r.status == 200, r.body
    body: Any = r.body
    assert (body["status"], body["records_in"], body["records_out"]) == ("success", 10, 4)
    assert body["flow"] == "numbers" and body["request_id"] == r.headers["x-request-id"]
    assert "records" not in body  # not a response sink
    assert read_jsonl(tmp_path / "numbers.jsonl") == [{"n": 0}, {"n": 1}, {"n": 2}, {"n": 3}]
    # the sink is the flow's: a query naming it is refused and writes nothing elsewhere
    out = tmp_path / "from_query.jsonl"
    r = answer(get("/flows/numbers/run", query={"sink.path": str(out)}), host)
    assert r.status == 400 and "sink.path" in r.body["error"] and not out.exists()  # type: ignore[call-overload]


def test_post_with_records_answers_with_the_records_and_dead_letters(host: LocalHost) -> None:
    r = answer(post("/flows/echo/run", {"records": [{"n": 1}, {"n": 2}, "oops", {"n": 4}]}), host)
    assert r.status == 200
    body: Any = r.body
    assert body["status"] == "partial"
    assert body["records"] == [{"n": 1, "doubled": 2}, {"n": 2, "doubled": 4}, {"n": 4, "doubled": 8}]
    assert (body["records_total"], body["records_truncated"]) == (3, False)
    assert body["dead_letters"] == 1
    [letter] = body["dead_letter_sample"]
    assert letter["record"] == "oops" and "not a JSON object" in letter["reason"]
    assert "backtrace" not in body
    assert ResponseSink.runs.get(body["run_id"]) is None  # popped after the run


def test_post_body_params_and_a_bare_array_of_records(host: LocalHost, tmp_path: Path) -> None:
    r = answer(post("/flows/to_file/run", {"records": [{"a": 1}, {"a": 5}], "params": {"min_a": 2}}), host)
    assert r.status == 200 and read_jsonl(tmp_path / "to_file.jsonl") == [{"a": 5}]
    r = answer(post("/flows/echo/run", [{"n": 5}]), host)
    assert r.body["records"] == [{"n": 5, "doubled": 10}]  # type: ignore[call-overload]


def test_base_path_is_stripped(host: LocalHost) -> None:
    r = answer(post("/adf/flows/echo/run", [{"n": 1}]), host, base_path="/adf")
    assert r.status == 200


# --------------------------------------------------------------------------- X-ADF headers and layers


def test_x_adf_headers_give_the_declared_parameters(host: LocalHost) -> None:
    records = [{"n": i} for i in range(5)]
    r = answer(post("/flows/limited/run", records, {"X-ADF-Param-Below": "2"}), host)
    body: Any = r.body
    assert body["records"] == [{"n": 0}, {"n": 1}]
    assert (body["records_in"], body["records_out"], body["filtered"]) == (5, 2, 3)
    # a per-value header wins over X-ADF-Params
    r = answer(post("/flows/limited/run", records, {"X-ADF-Params": '{"below": 1}', "X-ADF-Param-Below": "3"}), host)
    assert len(r.body["records"]) == 3  # type: ignore[call-overload]
    r = answer(post("/flows/limited/run", records, {"X-ADF-Param-Below": "1", "Accept": "application/json"},
                    query={"below": "4"}), host)
    assert len(r.body["records"]) == 4  # type: ignore[call-overload]  # query wins over headers
    r = answer(post("/flows/limited/run", {"records": records, "params": {"below": 2}}, query={"below": "4"}), host)
    assert len(r.body["records"]) == 2  # type: ignore[call-overload]  # the body wins over the query
    desc = answer(get("/flows/limited", {"X-ADF-Param-Below": "9"}), host)
    assert desc.body["params"]["below"] == 9  # type: ignore[call-overload]


def test_a_header_that_names_no_parameter_is_a_400_naming_it(host: LocalHost) -> None:
    r = answer(post("/flows/echo/run", [], {"X-ADF-Turbo": "on", "X-ADF-Config": "not json"}), host)
    assert r.status == 400
    body: Any = r.body
    assert body["error"].startswith("a request may set only its records and the parameters flow 'echo' declares")
    assert body["error_id"] and body["declared_params"] == []
    assert len(body["refused"]) == 2
    assert any("x-adf-turbo" in p for p in body["refused"]) and any("x-adf-config" in p for p in body["refused"])


def test_layer_precedence_variables_kv_env_payload(tmp_path: Path) -> None:
    store = MemoryStateStore()
    variables: dict[str, str] = {"adf_sink_limit": "1"}
    environ: dict[str, str] = {}
    host = LocalHost(specs(tmp_path), persist=False, store=store, variables=variables, environ=environ)
    records = [{"n": i} for i in range(9)]

    def kept() -> int:
        r = answer(post("/flows/echo/run", {"records": records}), host)
        assert r.status == 200, r.body
        return len(r.body["records"])  # type: ignore[call-overload]

    def origin() -> tuple[str, str]:
        explain = {e["path"]: e for e in answer(get("/flows/echo"), host).body["explain"]}  # type: ignore[call-overload]
        return explain["sink.limit"]["layer"], explain["sink.limit"]["origin"]

    assert kept() == 1 and origin() == ("manifest", "variable adf_sink_limit")
    variables["adf_flow_echo_sink_limit"] = "2"  # flow-scoped beats generic
    assert kept() == 2 and origin() == ("manifest", "variable adf_flow_echo_sink_limit")
    store.set("config/echo", {"sink.limit": 3})
    assert kept() == 3 and origin() == ("kv", "kv config/echo")
    environ["ADF__SINK__LIMIT"] = "4"
    assert kept() == 4 and origin() == ("env", "environment ADF__SINK__LIMIT")
    environ["ADF_ECHO__SINK__LIMIT"] = "5"
    assert kept() == 5
    # the request is no layer: it cannot change the limit, on a run or a description
    refused = answer(post("/flows/echo/run", {"records": records, "config": {"sink": {"limit": 6}}}), host)
    assert refused.status == 400 and "config" in refused.body["error"]  # type: ignore[call-overload]
    assert answer(get("/flows/echo", query={"sink.limit": "7"}), host).status == 400
    assert kept() == 5 and origin() == ("env", "environment ADF_ECHO__SINK__LIMIT")
    desc: Any = answer(get("/flows/echo"), host).body
    assert desc["ignored_variables"] == []


def test_a_declared_parameter_takes_the_operators_value_and_the_request_wins(tmp_path: Path) -> None:
    store = MemoryStateStore()
    variables: dict[str, str] = {}
    environ: dict[str, str] = {}
    host = LocalHost(specs(tmp_path), persist=False, store=store, variables=variables, environ=environ)
    records = [{"n": i} for i in range(9)]

    def kept(params: dict[str, Any] | None = None) -> int:
        r = answer(post("/flows/limited/run", {"records": records, **({"params": params} if params else {})}), host)
        assert r.status == 200, r.body
        return len(r.body["records"])  # type: ignore[call-overload]

    assert kept() == 9  # the declared default, 100
    variables["adf_flow_limited_params_below_default"] = "2"  # an operator changes the default
    assert kept() == 2
    variables["adf_flow_limited_config_below"] = "3"  # ...or sets the value
    assert kept() == 3
    store.set("config/limited", {"config.below": 4})
    assert kept() == 4
    environ["ADF_LIMITED__CONFIG__BELOW"] = "5"
    assert kept() == 5
    assert kept({"below": 6}) == 6  # the request's value wins


def test_flows_stored_in_the_kv_store_and_never_a_spec_in_the_payload(tmp_path: Path) -> None:
    store = MemoryStateStore()
    store.set("flows/kv_flow", {"source": {"type": "payload"}, "sink": {"type": "response"}})
    host = LocalHost({}, persist=False, store=store, environ={})
    assert [f["name"] for f in answer(get("/flows"), host).body["flows"]] == ["kv_flow"]  # type: ignore[call-overload]
    assert answer(post("/flows/kv_flow/run", [{"a": 1}]), host).body["records"] == [{"a": 1}]  # type: ignore[call-overload]
    spec = {"source": {"type": "payload"}, "sink": {"type": "file", "path": str(tmp_path / "adhoc.jsonl")}}
    refused = answer(post("/flows/adhoc/run", {"spec": spec, "records": [{"a": 1}]}), host)
    assert refused.status == 404  # no flow of that name: a request cannot bring one
    refused = answer(post("/flows/kv_flow/run", {"spec": spec, "records": [{"a": 1}]}), host)
    assert refused.status == 400 and "'spec'" in refused.body["error"]  # type: ignore[call-overload]
    # a host that asks for it (an older caller) still refuses, and is told so
    with pytest.warns(DeprecationWarning, match="allow_payload_spec has no effect"):
        permissive = LocalHost({}, persist=False, store=store, environ={}, allow_payload_spec=True)
    r = answer(post("/flows/kv_flow/run", {"spec": spec, "records": [{"a": 2}]}), permissive)
    assert r.status == 400 and "'spec'" in r.body["error"]  # type: ignore[call-overload]
    assert not (tmp_path / "adhoc.jsonl").exists()


def test_run_named_flow_and_a_persisting_host(tmp_path: Path) -> None:
    host = LocalHost(specs(tmp_path), persist=True, state_dir=tmp_path / "state", environ={})
    summary = run_named_flow(host, "limited", records=[{"n": 1}, 2, {"n": 9}], params={"below": 5})
    assert summary.status == "partial" and summary.records_out == 1 and summary.filtered == 1
    assert summary.dead_letter_sample is None  # persisted to a file instead
    assert summary.dead_letter_destination and Path(summary.dead_letter_destination).exists()
    assert (tmp_path / "state" / "limited" / "runs" / summary.run_id / "summary.json").exists()
    host.close()


# --------------------------------------------------------------------------- streaming


def ndjson(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in data.decode().splitlines()]


def test_streaming_gives_progress_events_then_the_summary(host: LocalHost) -> None:
    records = [{"n": i} for i in range(5)]
    response = handle_http(post("/flows/echo/run", records, {"Accept": "application/x-ndjson"}), host)
    assert isinstance(response, StreamingResponse)
    assert response.status == 200 and response.headers["content-type"] == "application/x-ndjson"
    events = ndjson(response.body())
    assert events[0]["event"] == "start" and events[0]["flow"] == "echo"
    progress = [e for e in events if e["event"] == "progress"]
    assert [p["records_in"] for p in progress] == [2, 4, 5]
    assert [p["records_out"] for p in progress] == [2, 4, 5]
    last = events[-1]
    assert last["event"] == "summary" and last["status"] == "success" and last["records_out"] == 5
    assert last["records"][4] == {"n": 4, "doubled": 8}
    assert last["run_id"] == events[0]["run_id"]
    # ?stream=true does the same; ?stream=false wins over Accept
    assert isinstance(handle_http(post("/flows/echo/run", records, query={"stream": "true"}), host), StreamingResponse)
    plain = handle_http(post("/flows/echo/run", records, {"Accept": "application/x-ndjson"}, {"stream": "false"}), host)
    assert isinstance(plain, Response)
    assert answer(post("/flows/echo/run", records, query={"stream": "maybe"}), host).status == 400


def test_streamed_events_arrive_while_the_flow_runs(host: LocalHost) -> None:
    GATE.clear()
    GateStep.batches = 0
    response = handle_http(post("/flows/gated/run", [{"i": i} for i in range(4)], query={"stream": "1"}), host)
    assert isinstance(response, StreamingResponse)
    events = []
    for chunk in response.chunks:
        event = json.loads(chunk)
        events.append(event)
        if event["event"] == "progress":
            GATE.set()  # the flow's second batch waits for this
    assert response.live is True
    assert events[-1]["status"] == "success", events[-1]
    assert [e["records_in"] for e in events if e["event"] == "progress"] == [1, 2, 3, 4]


def test_without_threads_pushing_is_live_and_iterating_still_works(host: LocalHost, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(streaming, "threads_available", lambda: False)
    started = threading.active_count()
    WRITTEN.clear()
    SEEN_AT_BATCH.clear()
    response = handle_http(post("/flows/probed/run", [{"i": i} for i in range(3)], query={"stream": "true"}), host)
    assert isinstance(response, StreamingResponse)
    response.write_to(WRITTEN.append, max_chunk=64)
    assert threading.active_count() == started
    # batch k ran after the start line and k-1 progress lines had been written to the client
    assert SEEN_AT_BATCH[0] >= 1 and SEEN_AT_BATCH[1] > SEEN_AT_BATCH[0] and SEEN_AT_BATCH[2] > SEEN_AT_BATCH[1]
    assert all(len(c) <= 64 for c in WRITTEN)
    events = ndjson(b"".join(WRITTEN))
    assert [e["event"] for e in events] == ["start", "progress", "progress", "progress", "summary"]
    with pytest.raises(RuntimeError, match="only once"):
        response.body()
    # iterating without threads: complete, not live
    iterated = handle_http(post("/flows/probed/run", [{"i": 1}], query={"stream": "true"}), host)
    assert isinstance(iterated, StreamingResponse)
    events = ndjson(iterated.body())
    assert iterated.live is False and events[-1]["event"] == "summary" and events[-1]["records_out"] == 1


def test_a_failing_flow_streams_a_failed_summary_with_an_error_id(host: LocalHost) -> None:
    response = handle_http(post("/flows/failing/run", [{"a": 1}], query={"stream": "true"}), host)
    assert isinstance(response, StreamingResponse)
    last = ndjson(response.body())[-1]
    assert last["event"] == "summary" and last["status"] == "failed" and last["code"] == 500
    assert "boom" in last["error"] and last["error_id"] and "backtrace" not in last


def test_errors_before_the_stream_starts_are_plain_json(host: LocalHost) -> None:
    r = answer(post("/flows/limited/run", {"params": {"below": "many"}}, query={"stream": "true"}), host)
    assert r.status == 422
    r = answer(post("/flows/echo/run", {"config": {"runtime.batch_size": -1}}, query={"stream": "true"}), host)
    assert r.status == 400


# --------------------------------------------------------------------------- errors


def test_unknown_flow_and_route_are_404_and_wrong_method_is_405(host: LocalHost) -> None:
    r = answer(post("/flows/nope/run", []), host)
    body: Any = r.body
    assert r.status == 404 and body["error"] == "no flow named 'nope'" and body["error_id"]
    assert "echo" in body["flows"]
    assert answer(get("/nothing/here"), host).status == 404
    r = answer(Request("DELETE", "/flows/echo/run"), host)
    assert r.status == 405 and r.headers["allow"] == "GET, POST"


def test_malformed_json_and_wrong_shapes_are_400(host: LocalHost) -> None:
    r = answer(post("/flows/echo/run", b'{"records": [1,'), host)
    assert r.status == 400 and r.body["error"].startswith("malformed JSON")  # type: ignore[call-overload]
    assert answer(post("/flows/echo/run", {"records": {"n": 1}}), host).status == 400
    assert answer(post("/flows/echo/run", {"config": [1]}), host).status == 400
    r = answer(post("/flows/echo/run", {"recs": []}), host)
    assert r.status == 400 and "'recs'" in r.body["error"]  # type: ignore[call-overload]
    assert answer(post("/flows/echo/run", b"\xff\xfe"), host).status == 400
    assert answer(post("/flows/echo/run", 42), host).status == 400
    assert answer(get("/flows/echo/run", query={"runtime..batch_size": "1"}), host).status == 400
    assert answer(get("/flows/echo/run", query={"progress_interval": "soon"}), host).status == 400


def test_invalid_config_is_422_with_every_problem(tmp_path: Path) -> None:
    environ = {"ADF_ECHO__RUNTIME__BATCH_SIZE": "0", "ADF_ECHO__SINK__BOGUS": "1"}  # an operator's mistake
    host = LocalHost(specs(tmp_path), persist=False, environ=environ)
    r = answer(post("/flows/echo/run", {"records": []}), host)
    assert r.status == 422
    body: Any = r.body
    assert len(body["problems"]) == 2
    assert any("batch_size" in p for p in body["problems"]) and any("bogus" in p for p in body["problems"])
    assert body["error_id"]
    r = answer(post("/flows/numbers/run", {"records": [{"n": 1}]}), host)
    assert r.status == 422 and "only a 'payload' source takes records" in r.body["problems"][0]  # type: ignore[call-overload]
    # a request's parameter values: every problem at once, with what the flow declares
    r = answer(post("/flows/limited/run", {"params": {"below": "lots", "token": 5}}), host)
    assert r.status == 422
    body = r.body
    assert len(body["problems"]) == 2 and body["error"].startswith("invalid parameters for flow 'limited'")
    assert [p["name"] for p in body["declared_params"]] == ["below", "token"]
    r = answer(post("/flows/echo/run", {"config": {"name": "other"}}), host)
    assert r.status == 400  # not a parameter: refused before anything is resolved
    host.close()


def test_a_failing_flow_is_500_with_the_summary_and_the_backtrace_only_in_the_log(host: LocalHost, logs: Capture) -> None:
    r = answer(post("/flows/failing/run", [{"a": 1}]), host)
    body: Any = r.body
    assert r.status == 500
    assert body["status"] == "failed" and body["error_type"] == "RuntimeError"
    assert "boom: the step broke" in body["error"] and body["error_id"]
    assert "backtrace" not in body and "Traceback" not in json.dumps(body)
    line = logs.lines()[-1]
    assert line["status"] == 500 and line["error_id"] == body["error_id"]
    assert line["request_id"] == r.headers["x-request-id"] == body["request_id"]
    assert "Traceback" in line["backtrace"] and "boom: the step broke" in line["backtrace"]
    assert line["run_status"] == "failed" and line["level"] == "error"


def test_memory_exhaustion_is_reported_not_a_crash(host: LocalHost) -> None:
    r = answer(post("/flows/oom/run", [{"a": 1}]), host)
    body: Any = r.body
    assert r.status == 507
    assert body["error"].startswith("out of memory while running flow 'oom'")
    assert body["error_type"] == "MemoryError" and body["status"] == "failed" and body["error_id"]

    class Exhausted(LocalHost):
        def specs(self) -> Any:
            raise MemoryError()

    r = answer(post("/flows/echo/run", []), Exhausted({}, persist=False, environ={}))
    assert r.status == 507 and r.body["error"].startswith("out of memory while handling the request")  # type: ignore[call-overload]


def test_an_unexpected_error_is_500_with_an_error_id_and_a_logged_traceback(tmp_path: Path, logs: Capture) -> None:
    class Broken(LocalHost):
        def store(self) -> Any:
            raise RuntimeError("key-value store unreachable: redis://app:hunter2@10.0.0.5:6379/0")

    host = Broken(specs(tmp_path), persist=False, environ={})
    r = answer(post("/flows/echo/run", [], {"X-Request-Id": "req-123"}), host)
    assert r.status == 500 and r.headers["x-request-id"] == "req-123"
    body: Any = r.body
    assert set(body) == {"error", "error_id"} and body["error_id"] in body["error"]
    assert "hunter2" not in json.dumps(body)
    line = logs.lines()[-1]
    assert line["request_id"] == "req-123" and line["error_id"] == body["error_id"]
    assert "key-value store unreachable" in line["backtrace"] and "hunter2" not in json.dumps(line)
    assert line["duration_ms"] >= 0 and line["memory_bytes"] > 0 and line["trigger"] == "http"


def test_custom_error_handlers_are_consulted_first(host: LocalHost, logs: Capture) -> None:
    seen: list[ErrorContext] = []

    def teapot(exc: BaseException, ctx: ErrorContext) -> Response:
        seen.append(ctx)
        assert isinstance(exc, FlowFailed)
        return Response(418, {"failed_run": exc.invocation.summary.run_id, "error_id": ctx.error_id})

    def pass_through(exc: BaseException, ctx: ErrorContext) -> None:
        seen.append(ctx)

    def broken(exc: BaseException, ctx: ErrorContext) -> Response:
        raise ValueError("the handler itself broke")

    host.register_error_handler(FlowFailed, teapot)
    host.error_handlers[NotFound] = pass_through
    host.error_handlers[ValueError] = broken  # not reached: nothing raises ValueError here
    r = answer(post("/flows/failing/run", [{"a": 1}]), host)
    assert r.status == 418 and r.body["failed_run"]  # type: ignore[call-overload]
    assert seen[-1].status == 500 and seen[-1].flow == "failing" and seen[-1].trigger == "http"
    assert seen[-1].request is not None and seen[-1].request.path == "/flows/failing/run"
    r = answer(get("/flows/nope"), host)
    assert r.status == 404 and seen[-1].status == 404  # None: the default answer
    host.error_handlers[Exception] = broken
    r = answer(post("/flows/nope/run", []), host)
    assert r.status == 404  # a handler that raises falls back to the default, and is logged
    assert any(line["msg"].startswith("custom error handler raised") for line in logs.lines())
