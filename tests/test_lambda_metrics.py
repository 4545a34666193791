"""The engine's counters on Lambda: Powertools EMF documents with the names and dimensions of the
OpenTelemetry instruments and of ``adf serve``'s ``/metrics`` (``adf.runs``, ``adf.records``…),
captured from the handler's stdout as CloudWatch reads them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from flowlib.scheduling import file_flow
from lambda_env import Context, event, v2_event, write_flows

from active_data_flow.handlers.schedule.sql import SqlScheduleStore
from active_data_flow.lambda_app import http, schedule

N = 20


def _emf(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if line.startswith("{") and '"_aws"' in line]


def _engine_metrics(docs: list[dict[str, Any]]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(metric name, its dimensions and values): value} of the documents carrying adf.* metrics."""
    found: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for doc in docs:
        [directive] = doc["_aws"]["CloudWatchMetrics"]
        assert directive["Namespace"] == "ActiveDataFlow"
        [dimensions] = directive["Dimensions"]
        for metric in directive["Metrics"]:
            if metric["Name"].startswith("adf."):
                value = doc[metric["Name"]]
                found[(metric["Name"], tuple(sorted((d, doc[d]) for d in dimensions)))] = (
                    sum(value) if isinstance(value, list) else value
                )
    return found


def test_a_flow_run_over_http_writes_the_run_and_record_counters(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    flows = write_flows(
        tmp_path / "flows",
        {
            "sevens": {
                "source": {"type": "payload"},
                "steps": [
                    {"type": "python", "function": "flowlib.steps:explode_on_sevens"},
                    {"type": "python", "function": "flowlib.integrity:drop_odd"},
                ],
                "sink": {"type": "response"},
                "runtime": {"batch_size": 4},
            }
        },
    )
    monkeypatch.setenv("ADF_FLOWS_DIR", str(flows))
    monkeypatch.delenv("ADF_BASE_PATH", raising=False)
    capsys.readouterr()
    resp = http.handler(
        v2_event("url", "POST", "/flows/sevens/run", body=[{"n": i} for i in range(1, N + 1)]), Context()
    )
    assert resp["statusCode"] == 200, resp["body"]
    body = json.loads(resp["body"])
    metrics = _engine_metrics(_emf(capsys.readouterr().out))
    sevens = N // 7
    survivors = [i for i in range(1, N + 1) if i % 7 and i % 2 == 0]
    flow = (("flow", "sevens"),)
    service = (("service", "adf"),)
    assert metrics[("adf.records", tuple(sorted(flow + service + (("kind", "in"),))))] == N
    assert metrics[("adf.records", tuple(sorted(flow + service + (("kind", "dead_letter"),))))] == sevens
    assert metrics[("adf.records", tuple(sorted(flow + service + (("kind", "out"),))))] == len(survivors)
    assert metrics[
        ("adf.records", tuple(sorted(flow + service + (("kind", "filtered"),))))
    ] == N - sevens - len(survivors)
    assert metrics[("adf.runs", tuple(sorted(flow + service + (("status", "partial"),))))] == 1
    assert (body["records_in"], body["records_out"], body["dead_letters"]) == (N, len(survivors), sevens), (
        body
    )


def test_a_scheduled_tick_writes_runs_and_claim_latency(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'schedule.db'}"
    monkeypatch.setenv("ADF_FLOWS_DIR", str(tmp_path / "no-flows"))
    monkeypatch.setenv("ADF_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("ADF_DATABASE_URL", url)
    with SqlScheduleStore(url) as store:
        store.create_flow("a", file_flow(tmp_path / "a.jsonl", n=3), 3600)
        store.create_flow("b", file_flow(tmp_path / "b.jsonl", n=2), 3600)
    capsys.readouterr()
    try:
        result = schedule.handler(event("cloudwatch-scheduled-event"), Context())
    finally:
        cached = schedule._stores.pop(url, None)
        if cached is not None:
            cached.close()
    assert result["flows_triggered"] == 2
    docs = _emf(capsys.readouterr().out)
    metrics = _engine_metrics(docs)
    for flow, n in (("a", 3), ("b", 2)):
        assert metrics[("adf.runs", (("flow", flow), ("service", "adf"), ("status", "success")))] == 1
        assert metrics[("adf.records", (("flow", flow), ("kind", "out"), ("service", "adf")))] == n
    latency = [doc for doc in docs if "adf.claim.latency" in doc]  # one document per claimed run
    assert len(latency) == 2 and all(v >= 0 for doc in latency for v in doc["adf.claim.latency"])
    assert latency[0]["_aws"]["CloudWatchMetrics"][0]["Metrics"] == [
        {"Name": "adf.claim.latency", "Unit": "Seconds"}
    ]
