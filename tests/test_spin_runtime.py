"""The component runtime's build-time work, run natively (the same code runs at build time)."""

from __future__ import annotations

import logging

import pytest

from active_data_flow.connectors.memory import ResponseSink
from active_data_flow.spin_app import runtime


def test_the_warm_up_answers_every_event_kind_and_leaves_nothing_behind(capsys: pytest.CaptureFixture[str]) -> None:
    assert runtime.WARM_UP_FAILED == []
    adf = logging.getLogger("adf")
    before = (list(adf.handlers), adf.level, adf.propagate, dict(ResponseSink.runs))
    capsys.readouterr()
    assert runtime.warm_up() == []
    assert (list(adf.handlers), adf.level, adf.propagate, dict(ResponseSink.runs)) == before
    out, err = capsys.readouterr()
    assert "warm" not in out + err  # its log lines and answers went nowhere


def test_the_warm_up_reports_an_answer_that_is_not_the_expected_one(monkeypatch: pytest.MonkeyPatch) -> None:
    broken = {"source": {"type": "payload"}, "sink": {"type": "no-such-sink"}}
    monkeypatch.setattr(runtime, "_WARM_FLOW", broken)
    failed = runtime.warm_up()
    assert any(f.startswith("http POST: answered 422") for f in failed), failed
    assert any(f.startswith("mqtt: answered 'error'") for f in failed), failed
