"""A flow's runs over time as a chart: :func:`run_chart` lays out the last runs of a flow —
records and duration per run, coloured by status — and ``_run_chart.html`` draws the layout
as inline SVG.

The chart is drawn on the server: it needs no script, no third-party library and nothing
from another origin (the dashboard's Content-Security-Policy allows none), and the page's
HTML carries the data. Each run is one mark, oldest on the left: a bar of its records in
(top panel) and a bar of its duration (bottom panel), both in its status's colour, with a
``<title>`` tooltip and ``data-*`` attributes holding the values drawn. A run still going
shows its counts so far and its time so far.

Standard library only.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from active_data_flow.handlers.schedule.store import ACTIVE_RUN_STATUSES, RUN_STATUSES, RunRecord
from active_data_flow.handlers.web.dashboard.format import duration, when

__all__ = ["CHART_RUNS", "STATUS_COLOURS", "Axis", "Mark", "RunChart", "nice_ceiling", "run_chart"]

#: how many of a flow's runs the chart shows (the newest)
CHART_RUNS = 50
#: the fill of each status's bars (and of its legend swatch)
STATUS_COLOURS = {
    "success": "#1d7a46",
    "partial": "#d97706",
    "failed": "#b3261e",
    "cancelled": "#8a94a3",
    "in_progress": "#2358c4",
    "pending": "#b59ad6",
}

# The drawing's coordinates (the SVG's viewBox; the SVG scales to the page's width).
WIDTH = 760
LEFT, RIGHT = 70, 14
PANEL_HEIGHT = 110
RECORDS_TOP = 30
DURATION_TOP = RECORDS_TOP + PANEL_HEIGHT + 46
AXIS_TOP = DURATION_TOP + PANEL_HEIGHT
HEIGHT = AXIS_TOP + 26
#: the chart keeps room for this many runs, so a flow with few runs gets narrow bars
MIN_SLOTS = 12
#: a run with nothing to draw (no records, no duration yet) still shows as a sliver
MIN_BAR = 2


@dataclass(frozen=True)
class Axis:
    """A panel's vertical scale: 0 to ``top`` (a round number), labelled at three ticks."""

    top: float
    unit: str
    ticks: list[tuple[float, str]]  # (y in the drawing, label)


@dataclass(frozen=True)
class Mark:
    """One run in the chart: its values and where its two bars are."""

    run_id: int
    status: str
    colour: str
    active: bool
    records: int | None
    seconds: float | None
    rate: float | None  # records in per second
    started: str
    x: float
    width: float
    records_y: float
    records_h: float
    duration_y: float
    duration_h: float
    title: str


@dataclass(frozen=True)
class RunChart:
    """The layout ``_run_chart.html`` draws."""

    marks: list[Mark]
    limit: int
    records_axis: Axis
    duration_axis: Axis
    x_labels: list[tuple[float, str, str]]  # (x, text-anchor, label)
    statuses: list[tuple[str, str, int]]  # (status, colour, runs) of every status, in RUN_STATUSES order
    summary: str
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    right: int = WIDTH - RIGHT
    records_top: int = RECORDS_TOP
    duration_top: int = DURATION_TOP
    panel_height: int = PANEL_HEIGHT
    axis_top: int = AXIS_TOP

    @property
    def empty(self) -> bool:
        return not self.marks


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5 or 5 times a power of ten at or above ``value`` (1 for nothing to show)."""
    if not math.isfinite(value) or value <= 0:
        return 1.0
    power = 10.0 ** math.floor(math.log10(value))
    for step in (1.0, 2.0, 2.5, 5.0, 10.0):
        if value <= step * power * (1 + 1e-9):
            return step * power
    return 10.0 * power  # pragma: no cover


def _number(value: float) -> str:
    if value == int(value):
        return f"{int(value):,}"
    return f"{value:,.1f}"


def _seconds_label(value: float) -> str:
    return "0" if value == 0 else duration(value)


def _axis(top_y: int, largest: float, unit: str, label: Any) -> Axis:
    top = nice_ceiling(largest)
    ticks = [(top_y + PANEL_HEIGHT * (1 - f), label(top * f)) for f in (0.0, 0.5, 1.0)]
    return Axis(top=top, unit=unit, ticks=ticks)


def _bar(value: float | None, axis: Axis, top_y: int) -> tuple[float, float]:
    """(y, height) of a bar of ``value`` on ``axis`` in the panel starting at ``top_y``."""
    share = 0.0 if value is None or axis.top <= 0 else min(max(value / axis.top, 0.0), 1.0)
    height = max(round(PANEL_HEIGHT * share, 2), MIN_BAR)
    return top_y + PANEL_HEIGHT - height, height


def _seconds_of(run: RunRecord, now: dt.datetime) -> float | None:
    """The run's duration; for a run still going, its time so far."""
    if run.duration is not None:
        return max(run.duration, 0.0)
    if run.status in ACTIVE_RUN_STATUSES and run.started_at is not None:
        return max((now - run.started_at).total_seconds(), 0.0)
    return None


def _title(run: RunRecord, seconds: float | None, rate: float | None) -> str:
    status = run.status.replace("_", " ")
    parts = [f"Run #{run.id}: {status}", when(run.started_at or run.created_at)]
    so_far = " so far" if run.status in ACTIVE_RUN_STATUSES else ""
    if run.records_in is not None:
        parts.append(
            f"{run.records_in:,} records in, {run.records_out or 0:,} out, "
            f"{run.dead_letters or 0:,} dead letters{so_far}"
        )
    if seconds is not None:
        parts.append(f"{duration(seconds)}{so_far}")
    if rate is not None:
        parts.append(f"{rate:,.1f} records/s")
    error = (run.error_message or "").strip()
    if error:
        parts.append(error.splitlines()[0][:120])
    return " · ".join(p for p in parts if p)


def _summary(marks: list[Mark], counts: Counter[str]) -> str:
    if not marks:
        return "No runs yet."
    first, last = marks[0].started, marks[-1].started
    tally = ", ".join(f"{counts[s]} {s.replace('_', ' ')}" for s in RUN_STATUSES if counts[s])
    most = max((m.records or 0) for m in marks)
    longest = max((m.seconds or 0.0) for m in marks)
    return (
        f"{len(marks)} run{'' if len(marks) == 1 else 's'} from {first} to {last}: {tally}. "
        f"Most records in one run: {most:,}; longest run: {duration(longest)}."
    )


def run_chart(
    runs: Sequence[RunRecord], *, limit: int = CHART_RUNS, now: dt.datetime | None = None
) -> RunChart:
    """The chart of the newest ``limit`` of ``runs`` (given in any order), oldest on the left."""
    now = now or dt.datetime.now(dt.UTC)
    chosen = sorted(runs, key=lambda r: r.id)[-limit:] if limit > 0 else []
    seconds = [_seconds_of(r, now) for r in chosen]
    records_axis = _axis(
        RECORDS_TOP, max([r.records_in or 0 for r in chosen], default=0), "records in per run", _number
    )
    duration_axis = _axis(
        DURATION_TOP, max([s or 0.0 for s in seconds], default=0.0), "duration of each run", _seconds_label
    )
    slot = (WIDTH - RIGHT - LEFT) / max(len(chosen), MIN_SLOTS)
    gap = min(max(slot * 0.2, 1.0), 8.0)
    marks: list[Mark] = []
    for i, (run, secs) in enumerate(zip(chosen, seconds, strict=True)):
        rate = run.records_in / secs if run.records_in is not None and secs else None
        records_y, records_h = _bar(run.records_in, records_axis, RECORDS_TOP)
        duration_y, duration_h = _bar(secs, duration_axis, DURATION_TOP)
        marks.append(
            Mark(
                run_id=run.id,
                status=run.status,
                colour=STATUS_COLOURS.get(run.status, "#5f6b7a"),
                active=run.status in ACTIVE_RUN_STATUSES,
                records=run.records_in,
                seconds=secs,
                rate=rate,
                started=when(run.started_at or run.created_at),
                x=round(LEFT + i * slot + gap / 2, 2),
                width=round(slot - gap, 2),
                records_y=records_y,
                records_h=records_h,
                duration_y=duration_y,
                duration_h=duration_h,
                title=_title(run, secs, rate),
            )
        )
    counts = Counter(m.status for m in marks)
    # the time axis: the runs are evenly spaced in their order, so its ends name their runs' times
    x_labels: list[tuple[float, str, str]] = []
    if marks:
        x_labels.append((LEFT, "start", f"oldest: #{marks[0].run_id}, {marks[0].started}"))
        if len(marks) > 1:
            x_labels.append((WIDTH - RIGHT, "end", f"newest: #{marks[-1].run_id}, {marks[-1].started}"))
    return RunChart(
        marks=marks,
        limit=limit,
        records_axis=records_axis,
        duration_axis=duration_axis,
        x_labels=x_labels,
        statuses=[(s, STATUS_COLOURS[s], counts[s]) for s in RUN_STATUSES],
        summary=_summary(marks, counts),
    )
