"""What the conformance suite shares: the spec and its data, what one target's run came to
(:class:`Outcome`), and the Spin components built with its flows (cached across runs by the
hash of what goes into them). The Lambda package is the session's ``sam build`` (``build``,
``runtime_dir``: tests/conftest.py), the one tests/test_lambda_package.py runs."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(__file__).resolve().parent / "data"
SPEC = DATA / "conformance.yaml"
CSV = DATA / "input.csv"
STEPS = DATA / "conformance_steps.py"
FLOW = "conformance"


def load_spec() -> dict[str, Any]:
    spec: dict[str, Any] = yaml.safe_load(SPEC.read_text(encoding="utf-8"))
    return spec


def canonical(record: Mapping[str, Any]) -> str:
    """One record as canonical JSON: keys sorted, no spaces, text as UTF-8 (not \\u escapes)."""
    return json.dumps(record, sort_keys=True, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def jsonl_records(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@dataclass
class Outcome:
    """What one target's run came to, normalised so that targets compare as data.

    ``sink``: the sink's contents, one canonical JSON line per record, sorted (as bytes).
    ``counts``: records_in, records_out, filtered, dead_letters (None where a target does not tell).
    ``reasons``: the summary's dead_letter_reasons as sorted ``(reason, count)`` (None: not exposed).
    ``letters``: the dead letters themselves as sorted ``(stage, step, reason, input line, record)``.
    """

    target: str
    sink: bytes
    counts: dict[str, int | None]
    reasons: list[tuple[str, int]] | None = None
    letters: list[tuple[Any, ...]] | None = None
    status: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def make(cls, target: str, records: Iterable[Mapping[str, Any]], summary: Mapping[str, Any], *,
             letters: Iterable[Mapping[str, Any]] | None = None, **extra: Any) -> Outcome:
        lines = sorted(canonical(r) for r in records)
        reasons = summary.get("dead_letter_reasons")
        return cls(
            target=target,
            sink=("".join(line + "\n" for line in lines)).encode("utf-8"),
            counts={k: summary.get(k) for k in ("records_in", "records_out", "filtered", "dead_letters")},
            reasons=None if reasons is None else sorted((str(r["reason"]), int(r["count"])) for r in reasons),
            letters=None if letters is None else sorted(letter_key(d) for d in letters),
            status=summary.get("status") or summary.get("run_status"),
            extra=dict(extra),
        )


def letter_key(letter: Mapping[str, Any]) -> tuple[Any, ...]:
    """A dead letter, without what differs by where it ran (file path or URL, byte offset, run id)."""
    record = letter.get("record")
    shown = canonical(record) if isinstance(record, Mapping) else str(record)
    origin = letter.get("origin") or {}
    return (letter.get("stage"), letter.get("step"), letter.get("reason"), origin.get("line"), shown)


def read_letters(path: str | os.PathLike[str] | None) -> list[dict[str, Any]]:
    if not path or not Path(path).exists():
        return []
    return jsonl_records(Path(path).read_text(encoding="utf-8"))


# --------------------------------------------------------------------------- cached Spin builds


def _cached(kind: str, key: str) -> tuple[Path, Path]:
    out = Path(tempfile.gettempdir()) / f"adf-conformance-{kind}" / key
    return out, out.with_name(f"{out.name}.{os.getpid()}.tmp")


def _keep_only(out: Path) -> None:
    """Drop the builds of earlier sources beside ``out`` (a SAM build is ~250 MB)."""
    for other in out.parent.iterdir():
        if other != out and other.is_dir() and len(other.name) == 24 and all(c in "0123456789abcdef" for c in other.name):
            shutil.rmtree(other, ignore_errors=True)


#: the flows bundled into the Spin components: the spec as it is, but for its sink (a component
#: cannot write a file: the HTTP flow answers with its records, the cron flow writes key-value)
#: and, for the cron component, its name (the schedule runs it; the HTTP one is not scheduled)
SPIN_HTTP_FLOW = FLOW
SPIN_CRON_FLOW = f"{FLOW}_cron"
SPIN_KV_PREFIX = "conformance/"


def spin_flows() -> list[dict[str, Any]]:
    spec = load_spec()
    spec["python_path"] = [str(DATA)]  # what active_data_flow.spin_app.build adds for a spec read from its file
    http = {**spec, "name": SPIN_HTTP_FLOW, "sink": {"type": "response"}}
    cron = {**spec, "name": SPIN_CRON_FLOW, "sink": {"type": "kv", "prefix": SPIN_KV_PREFIX, "key_field": "id"}}
    return [http, cron]


@pytest.fixture(scope="session")
def spin_components() -> dict[str, str]:
    """The HTTP and cron components with the conformance flows bundled (componentize-py)."""
    from active_data_flow.spin_app.build import build, source_digest

    flows = spin_flows()
    routes = {"cron": {SPIN_CRON_FLOW: 3600}}
    key = source_digest(json.dumps([flows, routes], sort_keys=True) + STEPS.read_text(encoding="utf-8"))
    out, tmp = _cached("spin", key)
    kinds = ("http", "cron")
    if not all((out / f"{k}.wasm").exists() for k in kinds):
        shutil.rmtree(tmp, ignore_errors=True)
        build(tmp, triggers=kinds, flows=flows, routes=routes)
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
        _keep_only(out)
    return {k: str(out / f"{k}.wasm") for k in kinds}
