"""OpenTelemetry spans and counters of runs, collected by the SDK's in-memory exporter and reader.

A real file → steps → file flow runs; its spans (``adf.run`` > ``adf.batch`` > ``adf.step`` /
``adf.sink``) and the counters ``adf.runs`` / ``adf.records`` are compared with the run's summary.
Readers in processes export their spans through the provider they inherit (a console exporter
writing to a file here); the counts are taken in the coordinator either way.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from active_data_flow import telemetry
from active_data_flow.engine import run_flow

ROOT = Path(__file__).resolve().parent.parent
N = 40


@pytest.fixture
def otel() -> Iterator[tuple[InMemorySpanExporter, InMemoryMetricReader]]:
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    telemetry.instrument(
        tracer_provider=tracer_provider, meter_provider=MeterProvider(metric_readers=[reader])
    )
    try:
        yield spans, reader
    finally:
        telemetry.uninstrument()


def _flow(tmp_path: Path, parallelism: int = 1, **extra: Any) -> dict[str, Any]:
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"n": i}) + "\n" for i in range(1, N + 1)))
    return {
        "name": "observed",
        "source": {"type": "file", "path": str(src), "split_bytes": 120},
        "steps": [
            {"type": "python", "function": "flowlib.steps:explode_on_sevens"},
            {"type": "python", "function": "flowlib.integrity:drop_odd"},
        ],
        "sink": {"type": "file", "path": str(tmp_path / "out.jsonl")},
        "runtime": {"batch_size": 8, "parallelism": parallelism},
        **extra,
    }


def _points(reader: InMemoryMetricReader, name: str) -> dict[tuple[tuple[str, Any], ...], Any]:
    """The data points of metric ``name``: {sorted attributes: value (sum, or the histogram point)}."""
    data = reader.get_metrics_data()
    out: dict[tuple[tuple[str, Any], ...], Any] = {}
    for resource in data.resource_metrics if data else []:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == name:
                    for point in metric.data.data_points:
                        out[tuple(sorted(point.attributes.items()))] = getattr(point, "value", point)
    return out


def _expected_counts() -> dict[str, int]:
    sevens = [i for i in range(1, N + 1) if i % 7 == 0]
    odd_survivors = [i for i in range(1, N + 1) if i % 7 and i % 2]
    return {
        "in": N,
        "dead_letter": len(sevens),
        "filtered": len(odd_survivors),
        "out": N - len(sevens) - len(odd_survivors),
    }


def test_a_run_is_a_span_tree_of_batches_and_steps_whose_counts_equal_the_summary(
    tmp_path: Path, state_dir: Path, otel: tuple[InMemorySpanExporter, InMemoryMetricReader]
) -> None:
    exporter, reader = otel
    summary = run_flow(_flow(tmp_path), state_dir=str(state_dir))
    assert summary.status == "partial", summary.error
    expected = _expected_counts()
    assert (summary.records_in, summary.records_out, summary.filtered, summary.dead_letters) == (
        expected["in"],
        expected["out"],
        expected["filtered"],
        expected["dead_letter"],
    )

    spans = exporter.get_finished_spans()
    by_name: dict[str, list[ReadableSpan]] = {}
    for s in spans:
        by_name.setdefault(s.name, []).append(s)
    [run] = by_name["adf.run"]
    assert run.parent is None
    assert (
        dict(run.attributes or {}).items()
        >= {
            "adf.flow": "observed",
            "adf.run_id": summary.run_id,
            "adf.status": "partial",
            "adf.records_in": summary.records_in,
            "adf.records_out": summary.records_out,
            "adf.filtered": summary.filtered,
            "adf.dead_letters": summary.dead_letters,
        }.items()
    )
    batches = by_name["adf.batch"]
    assert len(batches) >= N // 8
    assert all(b.parent is not None and b.parent.span_id == run.context.span_id for b in batches)
    assert all(b.context.trace_id == run.context.trace_id for b in spans)
    # the batches' own counts add up to the run's
    for key, field in (
        ("adf.records_in", "records_in"),
        ("adf.records_out", "records_out"),
        ("adf.filtered", "filtered"),
        ("adf.dead_letters", "dead_letters"),
    ):
        assert sum(int((b.attributes or {})[key]) for b in batches) == getattr(summary, field), key
    batch_ids = {b.context.span_id for b in batches}
    steps = by_name["adf.step"]
    assert len(steps) == 2 * len([b for b in batches if int((b.attributes or {})["adf.records_in"]) > 0])
    assert all(s.parent is not None and s.parent.span_id in batch_ids for s in steps)
    first_step = [s for s in steps if "explode_on_sevens" in str((s.attributes or {})["adf.step.name"])]
    assert {(s.attributes or {})["adf.step.type"] for s in steps} == {"python"}
    assert sum(int((s.attributes or {})["adf.dead_letters"]) for s in first_step) == expected["dead_letter"]
    sinks = by_name["adf.sink"]
    assert sum(int((s.attributes or {})["adf.records_in"]) for s in sinks) == summary.records_out
    assert all(s.parent is not None and s.parent.span_id in batch_ids for s in sinks)

    records = _points(reader, "adf.records")
    assert records == {(("flow", "observed"), ("kind", kind)): n for kind, n in expected.items()}
    assert _points(reader, "adf.runs") == {(("flow", "observed"), ("status", "partial")): 1}


def test_readers_in_processes_export_their_spans_under_the_run_and_the_counts_stay_exact(
    tmp_path: Path, state_dir: Path
) -> None:
    out = (tmp_path / "spans.json").open("w", encoding="utf-8")
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter(out=out)))
    reader = InMemoryMetricReader()
    telemetry.instrument(
        tracer_provider=tracer_provider, meter_provider=MeterProvider(metric_readers=[reader])
    )
    try:
        summary = run_flow(_flow(tmp_path, parallelism=2), state_dir=str(state_dir))
    finally:
        telemetry.uninstrument()
        out.close()
    assert summary.status == "partial", summary.error
    spans = _read_console_spans(tmp_path / "spans.json")
    [run] = [s for s in spans if s["name"] == "adf.run"]
    batches = [s for s in spans if s["name"] == "adf.batch"]
    assert {s["attributes"]["adf.reader_id"] for s in batches} <= {0, 1} and batches
    assert all(s["parent_id"] == run["context"]["span_id"] for s in batches)
    assert all(s["context"]["trace_id"] == run["context"]["trace_id"] for s in spans)
    assert sum(s["attributes"]["adf.records_in"] for s in batches) == summary.records_in == N
    expected = _expected_counts()
    assert _points(reader, "adf.records") == {
        (("flow", "observed"), ("kind", k)): n for k, n in expected.items()
    }


def _read_console_spans(path: Path) -> list[dict[str, Any]]:
    """The spans ConsoleSpanExporter wrote: JSON objects one after another."""
    text, spans, decoder, i = path.read_text(encoding="utf-8"), [], json.JSONDecoder(), 0
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i >= len(text):
            return spans
        obj, i = decoder.raw_decode(text, i)
        spans.append(obj)


def test_a_failed_run_has_an_error_span_and_counts_as_failed(
    tmp_path: Path, state_dir: Path, otel: tuple[InMemorySpanExporter, InMemoryMetricReader]
) -> None:
    exporter, reader = otel
    spec = _flow(tmp_path)
    spec["runtime"]["max_dead_letters"] = 2  # the batch with the third seven fails the run
    summary = run_flow(spec, state_dir=str(state_dir))
    assert summary.status == "failed" and "max_dead_letters" in (summary.error or "")
    [run] = [s for s in exporter.get_finished_spans() if s.name == "adf.run"]
    assert run.status.status_code is StatusCode.ERROR
    assert summary.error_type and summary.error_type in (run.status.description or "")
    assert _points(reader, "adf.runs") == {(("flow", "observed"), ("status", "failed")): 1}
    records = _points(reader, "adf.records")
    assert records[(("flow", "observed"), ("kind", "in"))] == summary.records_in < N
    assert records[(("flow", "observed"), ("kind", "dead_letter"))] == summary.dead_letters == 3


class _Broken(telemetry.Observer):
    def records(self, flow: str, kind: str, count: int) -> None:
        raise RuntimeError("observer bug")


class _Tally(telemetry.Observer):
    def __init__(self) -> None:
        self.records_seen: dict[str, int] = {}
        self.runs: list[tuple[str, str]] = []

    def records(self, flow: str, kind: str, count: int) -> None:
        self.records_seen[kind] = self.records_seen.get(kind, 0) + count

    def run_finished(self, flow: str, status: str) -> None:
        self.runs.append((flow, status))


def test_an_observer_sees_the_runs_of_its_scope_only_and_one_that_raises_fails_nothing(
    tmp_path: Path, state_dir: Path
) -> None:
    tally = _Tally()
    with telemetry.observe(_Broken()), telemetry.observe(tally):
        summary = run_flow(_flow(tmp_path), state_dir=str(state_dir))
    assert summary.status == "partial"
    assert tally.records_seen == _expected_counts()
    assert tally.runs == [("observed", "partial")]
    (tmp_path / "again").mkdir()
    run_flow(_flow(tmp_path / "again"), state_dir=str(state_dir))
    assert tally.runs == [("observed", "partial")]  # outside the scope: not seen


def test_adf_otel_0_turns_opentelemetry_off_even_when_it_is_imported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADF_OTEL", "0")
    assert not telemetry.otel_enabled() and telemetry.tracer() is None
    monkeypatch.setenv("ADF_OTEL", "1")
    assert telemetry.otel_enabled() and telemetry.tracer() is not None


PROBE = """
import json, sys
from active_data_flow.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
print("MODULES " + json.dumps({"code": code, "otel": sorted(m for m in sys.modules if m.startswith("opentelemetry"))}),
      file=sys.stderr)
"""


def _adf_run(tmp_path: Path, env: dict[str, str]) -> tuple[int, list[str], str]:
    spec = tmp_path / "flow.yaml"
    spec.write_text(json.dumps(_flow(tmp_path)))
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "ADF_OTEL"))}
    res = subprocess.run(
        [
            sys.executable,
            "-c",
            PROBE,
            "run",
            str(spec),
            "--json",
            "--no-progress",
            "--state-dir",
            str(tmp_path / "st"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**clean, "PYTHONPATH": str(ROOT / "tests"), **env},
    )
    line = next(ln for ln in res.stderr.splitlines() if ln.startswith("MODULES "))
    got = json.loads(line[len("MODULES ") :])
    return got["code"], got["otel"], res.stderr


def test_adf_run_without_configuration_imports_nothing_of_opentelemetry(tmp_path: Path) -> None:
    code, otel_modules, err = _adf_run(tmp_path, {})
    assert code == 0, err  # partial: the sevens are dead letters
    assert otel_modules == []


def test_adf_run_configures_the_sdk_from_the_standard_otel_variables(tmp_path: Path) -> None:
    code, otel_modules, err = _adf_run(
        tmp_path,
        {"OTEL_TRACES_EXPORTER": "console", "OTEL_METRICS_EXPORTER": "none", "OTEL_SERVICE_NAME": "nightly"},
    )
    assert code == 0, err
    assert "opentelemetry.sdk.trace" in otel_modules
    objects = []
    decoder, i = json.JSONDecoder(), 0
    while (start := err.find('{\n    "name": "adf.', i)) >= 0:
        obj, i = decoder.raw_decode(err, start)
        objects.append(obj)
    names = {o["name"] for o in objects}
    assert {"adf.run", "adf.batch", "adf.step", "adf.sink"} <= names
    [run] = [o for o in objects if o["name"] == "adf.run"]
    assert run["resource"]["attributes"]["service.name"] == "nightly"
    assert run["attributes"]["adf.records_in"] == N


def test_an_unsupported_exporter_name_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from active_data_flow.errors import AdfError

    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "zipkin")
    with pytest.raises(AdfError, match="OTEL_TRACES_EXPORTER='zipkin' is not supported"):
        telemetry.configure_from_env()
