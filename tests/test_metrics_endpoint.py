"""``GET /metrics`` of the heartbeat web app, scraped over HTTP from a real uvicorn server.

Heartbeats run real flows (one clean, one with dead letters and filtered records); the scrape is
parsed with prometheus_client's own parser and compared with the runs the schedule recorded and the
engine's summaries.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import settings as settings_
from hypothesis import strategies as st
from live_server import client_from, live_server
from prometheus_client.parser import text_string_to_metric_families

from active_data_flow.handlers.schedule.sql import SqlScheduleStore
from active_data_flow.handlers.settings import Settings
from active_data_flow.handlers.web.metrics import PrometheusMetrics

TOKEN = "hb-7f3c9a-metrics-heartbeat-token"
API_TOKEN = "api-5be1d0c2-metrics-scraper-token"
N = 30


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqlScheduleStore]:
    s = SqlScheduleStore(f"sqlite:///{tmp_path / 'adf.db'}")
    yield s
    s.close()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        state_dir=str(tmp_path / "state"),
        database_url=f"sqlite:///{tmp_path / 'adf.db'}",
        heartbeat_token=TOKEN,
    )


def _flows(store: SqlScheduleStore, tmp_path: Path) -> None:
    records = [{"n": i} for i in range(1, N + 1)]
    store.create_flow(
        "clean",
        {
            "source": {"type": "memory", "records": records},
            "sink": {"type": "file", "path": str(tmp_path / "clean.jsonl")},
        },
        60,
    )
    store.create_flow(
        "messy",
        {
            "source": {"type": "memory", "records": records},
            "steps": [
                {"type": "python", "function": "flowlib.steps:explode_on_sevens"},
                {"type": "python", "function": "flowlib.integrity:drop_odd"},
            ],
            "sink": {"type": "file", "path": str(tmp_path / "messy.jsonl")},
            "runtime": {"batch_size": 7},
        },
        60,
    )


def _backdate(tmp_path: Path, store: SqlScheduleStore, flow: str, seconds: int) -> None:
    """Make ``flow`` due ``seconds`` ago (as a heartbeat that was down that long would find it)."""
    at = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=seconds)
    with sqlite3.connect(tmp_path / "adf.db") as conn:
        conn.execute(
            "UPDATE data_flows SET next_run_at = ? WHERE name = ?", (store.port.dialect.bind_time(at), flow)
        )


def _scrape(
    url: str, client: httpx.Client, **headers: str
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    resp = client.get(f"{url}/metrics", headers=headers)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/plain; version=")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(resp.text)
        for sample in family.samples
    }


def _summary(tmp_path: Path, engine_run_id: str, flow: str) -> dict[str, Any]:
    return dict(json.loads((tmp_path / "state" / flow / "runs" / engine_run_id / "summary.json").read_text()))


def test_a_scrape_counts_the_heartbeats_runs_records_and_claim_latency(
    store: SqlScheduleStore, settings: Settings, tmp_path: Path
) -> None:
    _flows(store, tmp_path)
    _backdate(tmp_path, store, "messy", 7200)
    with live_server(settings, store) as url, client_from() as client:
        refused = client.post(f"{url}/heartbeat", headers={"X-Heartbeat-Token": "wrong"})
        assert refused.status_code == 401
        beat = client.post(f"{url}/heartbeat", headers={"X-Heartbeat-Token": TOKEN})
        assert beat.status_code == 200 and beat.json()["flows_triggered"] == 2
        metrics = _scrape(url, client)

    runs = {r.flow_name: r for r in store.list_runs()}
    assert runs["clean"].status == "success" and runs["messy"].status == "partial"
    for flow, run in runs.items():
        summary = _summary(tmp_path, run.engine_run_id or "", flow)
        assert metrics[("adf_runs_total", (("flow", flow), ("status", summary["status"])))] == 1
        for kind, field in (
            ("in", "records_in"),
            ("out", "records_out"),
            ("filtered", "filtered"),
            ("dead_letter", "dead_letters"),
        ):
            assert (
                metrics.get(("adf_records_total", (("flow", flow), ("kind", kind))), 0) == summary[field]
            ), (flow, kind)
        assert summary["records_in"] == run.records_in and summary["records_out"] == run.records_out
        assert summary["dead_letters"] == run.dead_letters
    sevens = N // 7
    assert metrics[("adf_records_total", (("flow", "messy"), ("kind", "dead_letter")))] == sevens
    assert metrics[("adf_records_total", (("flow", "messy"), ("kind", "filtered")))] > 0

    assert metrics[("adf_heartbeats_total", (("outcome", "ok"),))] == 1
    assert metrics[("adf_heartbeats_total", (("outcome", "unauthorized"),))] == 1
    assert metrics[("adf_claim_latency_seconds_count", (("trigger", "heartbeat"),))] == 2
    assert metrics[("adf_claim_latency_seconds_sum", (("trigger", "heartbeat"),))] >= 7200
    # the backdated flow waited two hours: above the one-hour bucket; the other one below it
    assert metrics[("adf_claim_latency_seconds_bucket", (("le", "3600.0"), ("trigger", "heartbeat")))] == 1
    assert metrics[("adf_claim_latency_seconds_bucket", (("le", "+Inf"), ("trigger", "heartbeat")))] == 2


def test_metrics_follow_the_api_token_rule(store: SqlScheduleStore, settings: Settings) -> None:
    with (
        live_server(dataclasses.replace(settings, api_token=API_TOKEN), store) as url,
        client_from() as client,
    ):
        missing = client.get(f"{url}/metrics")
        wrong = client.get(f"{url}/metrics", headers={"Authorization": "Bearer nope"})
        metrics = _scrape(url, client, Authorization=f"Bearer {API_TOKEN}")
    assert missing.status_code == 401 and wrong.status_code == 401
    assert "adf_runs_total" not in {name for name, _ in metrics}  # nothing ran yet
    assert not any("nope" in str(k) or API_TOKEN in str(k) for k in metrics)


def test_without_a_token_only_local_clients_may_scrape(store: SqlScheduleStore, settings: Settings) -> None:
    with live_server(settings, store) as url, client_from("127.0.0.2") as remote, client_from() as local:
        refused = remote.get(f"{url}/metrics")
        assert local.get(f"{url}/metrics").status_code == 200
    assert refused.status_code == 403
    assert "ADF_API_TOKEN" in refused.json()["error"]


def test_two_apps_in_one_process_count_apart(
    store: SqlScheduleStore, settings: Settings, tmp_path: Path
) -> None:
    _flows(store, tmp_path)
    with (
        live_server(settings, store) as first,
        live_server(settings, store) as second,
        client_from() as client,
    ):
        assert client.post(f"{first}/heartbeat", headers={"X-Heartbeat-Token": TOKEN}).status_code == 200
        seen_first = _scrape(first, client)
        seen_second = _scrape(second, client)
    assert seen_first[("adf_runs_total", (("flow", "clean"), ("status", "success")))] == 1
    assert not any(
        name in ("adf_runs_total", "adf_records_total", "adf_heartbeats_total") for name, _ in seen_second
    )


@settings_(max_examples=60, deadline=None)
@given(
    st.dictionaries(
        st.text(min_size=1, max_size=40),
        st.tuples(
            st.integers(min_value=0, max_value=10**9),
            st.sampled_from(["in", "out", "filtered", "dead_letter"]),
        ),
        min_size=1,
        max_size=5,
    )
)
def test_any_flow_name_survives_the_exposition_format(counts: dict[str, tuple[int, str]]) -> None:
    """Quotes, backslashes, newlines and any Unicode in a flow's name come back from a scrape as they went in."""
    metrics = PrometheusMetrics()
    for flow, (count, kind) in counts.items():
        metrics.records(flow, kind, count)
        metrics.run_finished(flow, "success")
    body, _ = metrics.exposition()
    parsed = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body.decode("utf-8"))
        for sample in family.samples
    }
    for flow, (count, kind) in counts.items():
        assert parsed[("adf_records_total", (("flow", flow), ("kind", kind)))] == count
        assert parsed[("adf_runs_total", (("flow", flow), ("status", "success")))] == 1
