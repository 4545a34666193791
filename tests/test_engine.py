"""The engine on real files: steps, dead letters, sink retries, the class form, resume."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from active_data_flow.attributes import Attribute
from active_data_flow.engine import run_flow
from active_data_flow.errors import RegistryError, SpecError
from active_data_flow.flow import DataFlow
from active_data_flow.registry import registry

registry.register("sink", "flaky", "flowlib.sinks:FlakySink")
registry.register("sink", "picky", "flowlib.sinks:PickySink")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("parallelism", [1, 2])
def test_a_failing_step_dead_letters_the_record_and_the_run_goes_on(tmp_path: Path, state_dir: Path, parallelism: int) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [{"n": i} for i in range(100)])
    out = tmp_path / "out.jsonl"
    summary = run_flow(
        {
            "name": "sevens",
            "source": {"type": "file", "path": str(src), "split_bytes": 200},
            "steps": [{"type": "python", "function": "flowlib.steps:explode_on_sevens"},
                      {"type": "python", "function": "flowlib.steps:double"}],
            "sink": {"type": "file", "path": str(out)},
            "runtime": {"batch_size": 9, "parallelism": parallelism},
        },
        state_dir=str(state_dir),
    )
    assert summary.status == "partial", summary.error
    sevens = [i for i in range(100) if i % 7 == 0]
    assert summary.records_in == 100
    assert summary.records_out == 100 - len(sevens)
    assert summary.dead_letters == len(sevens)
    assert sorted(r["n"] for r in read_jsonl(out)) == [i for i in range(100) if i % 7]
    assert all(r["doubled"] == r["n"] * 2 for r in read_jsonl(out))
    letters = read_jsonl(Path(summary.dead_letter_destination or ""))
    assert sorted(d["record"]["n"] for d in letters) == sevens
    first = letters[0]
    assert first["stage"] == "step" and first["error_type"] == "ValueError"
    assert "seven divides" in first["reason"] and first["step"].startswith("python:flowlib.steps:explode_on_sevens")
    assert first["flow"] == "sevens" and first["run_id"] == summary.run_id
    assert Path(summary.dead_letter_destination or "").is_relative_to(state_dir / "sevens")


def test_fan_out_filter_and_batch_steps(tmp_path: Path, state_dir: Path) -> None:
    rows = [{"n": i, "name": "boom" if i == 4 else f"x{i}"} for i in range(12)]
    out = tmp_path / "out.jsonl"
    summary = run_flow(
        {
            "name": "shapes",
            "source": {"type": "memory", "records": rows},
            "steps": [
                {"type": "filter", "function": "flowlib.steps:is_even"},
                {"type": "python", "function": "flowlib.steps:batch_upper", "batch": True},
                {"type": "python", "function": "flowlib.steps:fan_out"},
            ],
            "sink": {"type": "file", "path": str(out)},
            "runtime": {"batch_size": 5},
        },
        state_dir=str(state_dir),
    )
    assert summary.status == "partial"
    got = read_jsonl(out)
    # even n except 4 (batch step refused it) fan out into n % 3 copies, names upper-cased
    expected = sorted((n, c) for n in range(0, 12, 2) if n != 4 for c in range(n % 3))
    assert sorted((r["n"], r["copy"]) for r in got) == expected
    assert all(r["name"] == f"X{r['n']}" for r in got)
    assert summary.dead_letters == 1


def test_sink_errors_are_retried_with_backoff_then_only_refused_records_are_dead_lettered(tmp_path: Path, state_dir: Path) -> None:
    out = tmp_path / "out.jsonl"
    flaky = run_flow(
        {
            "name": "flaky",
            "source": {"type": "memory", "records": [{"n": i} for i in range(30)]},
            "sink": {"type": "flaky", "path": str(out), "fail_first": 2},
            "runtime": {"batch_size": 10, "retries": 3, "retry_backoff_s": 0.01},
        },
        state_dir=str(state_dir),
    )
    assert flaky.status == "success" and flaky.dead_letters == 0
    assert sorted(r["n"] for r in read_jsonl(out)) == list(range(30))

    out2 = tmp_path / "out2.jsonl"
    picky = run_flow(
        {
            "name": "picky",
            "source": {"type": "memory", "records": [{"n": i} for i in range(30)]},
            "sink": {"type": "picky", "path": str(out2)},
            "dead_letter": {"type": "file", "path": str(tmp_path / "rejected.jsonl")},
            "runtime": {"batch_size": 10, "retries": 1, "retry_backoff_s": 0.01},
        },
        state_dir=str(state_dir),
    )
    assert picky.status == "partial"
    assert sorted(r["n"] for r in read_jsonl(out2)) == [i for i in range(30) if i % 10]
    rejected = read_jsonl(tmp_path / "rejected.jsonl")
    assert sorted(r["record"]["n"] for r in rejected) == [0, 10, 20]
    assert all(r["stage"] == "sink" and "check constraint" in r["reason"] for r in rejected)
    assert picky.dead_letter_destination is not None and "rejected.jsonl" in picky.dead_letter_destination


def test_sink_error_policy_fail_fails_the_run_and_keeps_the_checkpoint(tmp_path: Path, state_dir: Path) -> None:
    summary = run_flow(
        {
            "name": "strict",
            "source": {"type": "memory", "records": [{"n": i} for i in range(30)]},
            "sink": {"type": "picky", "path": str(tmp_path / "o.jsonl")},
            "runtime": {"batch_size": 10, "retries": 0, "sink_error_policy": "fail"},
        },
        state_dir=str(state_dir),
    )
    assert summary.status == "failed"
    assert summary.error_type == "ValueError" and "check constraint" in (summary.error or "")
    assert summary.backtrace and "flowlib/sinks.py" in summary.backtrace
    assert (state_dir / "strict" / "checkpoint" / "run.json").exists()
    record = json.loads((state_dir / "strict" / "runs" / summary.run_id / "summary.json").read_text())
    assert record["status"] == "failed" and record["error_type"] == "ValueError"


class Enrich(DataFlow):
    name = "enrich_class"
    source = {"type": "memory", "records": [{"n": i} for i in range(20)]}
    steps = ({"type": "filter", "field": "n", "op": "ge", "value": 5},)
    configuration_attributes = (Attribute("factor", int, default=3),)

    def transform(self, record: dict[str, Any]) -> dict[str, Any] | None:
        if record["n"] == 13:
            raise KeyError("unlucky")
        record["scaled"] = record["n"] * self.config["factor"]
        return record


def test_the_class_form_and_the_spec_form_run_on_the_same_engine(tmp_path: Path, state_dir: Path) -> None:
    out_class = tmp_path / "class.jsonl"

    class ToFile(Enrich):
        sink = {"type": "file", "path": str(out_class)}

    summary = ToFile.run_now({"factor": 10}, state_dir=str(state_dir))
    assert summary.status == "partial" and summary.dead_letters == 1
    assert {r["n"]: r["scaled"] for r in read_jsonl(out_class)} == {n: n * 10 for n in range(5, 20) if n != 13}

    with pytest.raises(Exception, match="factor"):
        ToFile.run_now({"factor": "lots"}, state_dir=str(state_dir))


def test_a_bad_spec_reports_every_problem_at_once() -> None:
    with pytest.raises(SpecError) as err:
        run_flow(
            {
                "name": "bad name!",
                "source": {"type": "file"},
                "steps": [{"type": "python", "function": "nope.missing:fn"}, {"type": "filter"}],
                "sink": {"type": "kafka", "topic": "x"},
                "runtime": {"parallelism": 0, "batch_size": "many"},
                "extra_key": 1,
            }
        )
    text = str(err.value)
    problems = err.value.problems
    assert len(problems) >= 7, problems
    for fragment in ("'name'", "source: 'path' is required", "steps[0]: cannot load function 'nope.missing:fn'",
                     "steps[1]", "unknown sink type 'kafka'", "rafka",
                     "runtime: 'parallelism': must be greater than 0", "runtime: 'batch_size'", "unknown key 'extra_key'"):
        assert fragment in text, fragment


def test_unknown_types_list_what_is_installed_and_the_extra() -> None:
    with pytest.raises(RegistryError) as err:
        registry.resolve("source", "kinesis")
    msg = str(err.value)
    assert "unknown source type 'kinesis'" in msg
    assert "file" in msg and "sql" in msg and "memory" in msg and "rafka" in msg
    with pytest.raises(RegistryError) as err:
        registry.resolve("runtime", "flink")  # the Flink runtime is not a built-in: its extra is named
    assert "active-data-flow[flink]" in str(err.value)


def test_entry_point_plugins_are_discovered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A real installed distribution (dist-info with entry_points.txt) adds a sink type.
    site = tmp_path / "site"
    dist = site / "adf_plugin_demo-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: adf-plugin-demo\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[active_data_flow.sinks]\ndemo = flowlib.sinks:FlakySink\n")
    monkeypatch.syspath_prepend(str(site))
    from active_data_flow.registry import Registry

    reg = Registry()
    assert "demo" in reg.names("sink")
    assert "adf-plugin-demo" in reg.origin("sink", "demo")
    assert reg.resolve("sink", "demo").__name__ == "FlakySink"


def test_a_built_in_type_whose_module_is_not_in_the_build_is_named_as_unavailable() -> None:
    # as inside a Spin component, which carries only the connectors that can run there
    from active_data_flow.errors import UnavailableTypeError
    from active_data_flow.registry import Registry
    from active_data_flow.spec import parse_spec

    reg = Registry()
    reg._entries["source"]["sql"] = "active_data_flow.connectors.not_in_this_build:SqlSource"
    with pytest.raises(UnavailableTypeError) as err:
        reg.resolve("source", "sql")
    assert "the source type 'sql' is not available here" in str(err.value)
    with pytest.raises(SpecError) as bad:  # a flow naming it is refused with that reason, not a crash
        parse_spec({"name": "f", "source": {"type": "sql", "url": "sqlite://", "table": "t"},
                    "sink": {"type": "stdout"}}, reg=reg)
    assert "source: the source type 'sql' is not available here" in str(bad.value)
    reg._entries["source"]["file"] = "active_data_flow.connectors.file:NoSuchClass"  # a real bug stays an error of its own
    with pytest.raises((ImportError, AttributeError)):
        reg.resolve("source", "file")


@pytest.mark.parametrize("parallelism", [1, 2])
def test_an_unbounded_source_picks_up_new_files_and_a_stopped_run_continues_later(
    tmp_path: Path, state_dir: Path, parallelism: int
) -> None:
    import threading

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    write_jsonl(inbox / "a.jsonl", [{"n": i} for i in range(10)])
    out = tmp_path / "out.jsonl"
    spec = {
        "name": "watcher",
        "source": {"type": "file", "path": str(inbox / "*.jsonl"), "watch": True},
        "sink": {"type": "file", "path": str(out), "mode": "append"},
        "runtime": {"parallelism": parallelism, "stop_after_s": 2.5, "discovery_interval_s": 0.2, "idle_sleep_s": 0.05},
    }
    timer = threading.Timer(0.8, lambda: write_jsonl(inbox / "b.jsonl", [{"n": i} for i in range(10, 25)]))
    timer.start()
    first = run_flow(spec, state_dir=str(state_dir))
    timer.join()
    assert first.status == "stopped", first.error
    assert sorted(r["n"] for r in read_jsonl(out)) == list(range(25))
    assert (state_dir / "watcher" / "checkpoint" / "run.json").exists(), "a stopped stream keeps its checkpoint"

    write_jsonl(inbox / "c.jsonl", [{"n": i} for i in range(25, 30)])
    second = run_flow(spec, state_dir=str(state_dir))
    assert second.status == "stopped" and second.resumed
    assert second.records_in == 5, "only the new file is read"
    assert sorted(r["n"] for r in read_jsonl(out)) == list(range(30))


def test_a_reader_process_error_fails_the_run_with_the_reader_backtrace(tmp_path: Path, state_dir: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [{"n": i} for i in range(4000)])
    summary = run_flow(
        {
            "name": "sinkdown",
            "source": {"type": "file", "path": str(src), "split_bytes": 4000},
            "steps": [{"type": "python", "function": "flowlib.steps:slow", "options": {"delay": 0.001}}],
            "sink": {"type": "picky", "path": str(tmp_path / "out.jsonl")},
            "runtime": {"parallelism": 2, "batch_size": 50, "retries": 0, "sink_error_policy": "fail"},
        },
        state_dir=str(state_dir),
    )
    assert summary.status == "failed"
    assert "check constraint" in (summary.error or "") and summary.error_type == "ValueError"
    assert summary.backtrace and "flowlib/sinks.py" in summary.backtrace
    assert (state_dir / "sinkdown" / "checkpoint" / "run.json").exists()


def test_a_run_that_may_not_write_files_returns_its_dead_letters_in_the_summary(tmp_path: Path) -> None:
    # Any attempt to create a directory under a regular file fails: nothing may be written.
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    spec = {
        "name": "no_files",
        "source": {"type": "memory", "records": [{"n": i} for i in range(20)]},
        "steps": [{"type": "python", "function": "flowlib.steps:explode_on_sevens"}],
        "sink": {"type": "memory", "name": "no_files"},
        "runtime": {"parallelism": 2},
    }
    summary = run_flow(spec, state_dir=str(blocker / "state"), persist=False)
    assert summary.status == "partial", summary.error
    assert summary.records_out == 17 and summary.dead_letters == 3 and summary.parallelism == 1
    assert [d["record"]["n"] for d in summary.dead_letter_sample or []] == [0, 7, 14]
    assert summary.dead_letter_destination == "the run summary (dead_letter_sample)"
    assert run_flow(spec, state_dir=str(blocker / "state")).status == "failed"  # the default does write


def test_readers_are_forked_while_no_thread_is_writing_a_log_line(tmp_path: Path) -> None:
    """A thread in the middle of a log line when a reader is forked would leave the child with that
    stream's lock held forever; the fork waits until the line is written, and the run completes."""
    import logging
    import threading

    from active_data_flow.engine import processes as engine

    in_emit, finish_emit, forked = threading.Event(), threading.Event(), threading.Event()

    class SlowHandler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage() == "slow line":
                in_emit.set()
                finish_emit.wait(10)

    handler = SlowHandler()
    log = logging.getLogger("adf-test-fork")
    log.addHandler(handler)
    try:
        writer = threading.Thread(target=log.warning, args=("slow line",))
        writer.start()
        assert in_emit.wait(10)

        def fork() -> None:
            with engine._no_log_writes_in_flight():
                forked.set()

        forker = threading.Thread(target=fork)
        forker.start()
        assert not forked.wait(0.3)  # a log line is being written: no fork yet
        finish_emit.set()
        assert forked.wait(10)
        writer.join(10)
        forker.join(10)
        src = tmp_path / "in.jsonl"
        src.write_text("".join(json.dumps({"n": i}) + "\n" for i in range(40)))
        spec = {"name": "fork_logs", "source": {"type": "file", "path": str(src), "split_bytes": 64},
                "sink": {"type": "file", "path": str(tmp_path / "out.jsonl")}, "runtime": {"parallelism": 2}}
        summary = run_flow(spec, state_dir=str(tmp_path / "state"))
        assert summary.status == "success" and summary.records_out == 40
    finally:
        finish_emit.set()
        log.removeHandler(handler)


def test_a_reader_killed_in_the_middle_of_a_message_is_replaced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A reader process killed while it was sending the coordinator a message (half of it
    written) neither blocks the other readers nor the run: its channel ends, it is replaced, and
    every record arrives (at least once)."""
    monkeypatch.setenv("ADF_TEST_DIE_MARKER", str(tmp_path / "died"))
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"n": i}) + "\n" for i in range(40)))
    out = tmp_path / "out.jsonl"
    spec = {"name": "die_mid_message", "source": {"type": "file", "path": str(src), "split_bytes": 64},
            "steps": [{"type": "python", "function": "flowlib.steps:die_mid_message"}],
            "sink": {"type": "file", "path": str(out)}, "runtime": {"parallelism": 2, "batch_size": 2}}
    summary = run_flow(spec, state_dir=str(tmp_path / "state"))
    assert (tmp_path / "died").exists()
    assert summary.status == "success", summary.error
    assert summary.reader_restarts == 1
    assert {json.loads(line)["n"] for line in out.read_text().splitlines()} == set(range(40))
