"""Routes: which trigger runs which flow.

``--route KIND[:PATTERN]=FLOW`` (:func:`parse_route`), the default route of each trigger kind
(:func:`default_route_key`), the plan of every route by kind (:func:`plan_routes`), and the
rules a route's pattern follows: HTTP paths, MQTT topic filters, Redis channels and cron
intervals.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from active_data_flow.spin_app.manifest.conventions import TRIGGER_KINDS
from active_data_flow.spin_app.manifest.flows import FlowFile


@dataclass(frozen=True)
class Route:
    """A trigger routed to a flow. ``key`` is None for the default route of the kind."""

    kind: str
    key: str | None
    flow: str


def parse_route(text: str) -> Route:
    """``KIND[:PATTERN]=FLOW``: ``redis:orders=publish``, ``mqtt:sensors/+/temp=readings``,
    ``cron:300=snapshot`` (due every 300 s), ``cron:CRON_TZ=Europe/Berlin 0 6 * * 1-5=report`` (a
    calendar), ``http=enrich``, or ``KIND=FLOW`` for the default."""
    left, sep, flow = text.rpartition("=")
    if not sep or not left or not flow.strip():
        raise ValueError(f"route {text!r}: expected KIND[:PATTERN]=FLOW (e.g. redis:orders=my_flow)")
    kind, colon, key = left.partition(":")
    kind = kind.strip().lower()
    if kind not in TRIGGER_KINDS:
        raise ValueError(f"route {text!r}: unknown trigger {kind!r} (one of: {', '.join(TRIGGER_KINDS)})")
    key = key.strip()
    if colon and not key:
        raise ValueError(f"route {text!r}: empty pattern after '{kind}:'")
    if kind == "http" and key:
        raise ValueError(
            f"route {text!r}: HTTP paths are fixed — GET|POST /flows/<flow>/run runs each flow routed to "
            f"http (GET /flows lists them); use --route http={flow.strip()}"
        )
    problem = route_key_problem(kind, key) if key else None
    if problem:
        raise ValueError(f"route {text!r}: {problem}")
    return Route(kind, key or None, flow.strip())


def route_key_problem(kind: str, key: str) -> str | None:
    """Why ``key`` cannot be the pattern of a ``kind`` route, or None."""
    if kind == "http":
        return http_route_problem(key)
    if kind == "cron":
        return cron_route_problem(key)
    if kind == "mqtt":
        return mqtt_topic_problem(key)
    if kind == "redis" and (not key.strip() or any(c.isspace() for c in key)):
        return f"redis channel {key!r} must be a non-empty name without whitespace"
    return None


def cron_route_problem(key: str) -> str | None:
    """Why ``key`` is not a cron route's pattern: seconds between runs (``300``) or a calendar
    (``0 6 * * 1-5``, in a zone ``CRON_TZ=Europe/Berlin 0 6 * * 1-5``) that the component's
    heartbeat reads with :func:`active_data_flow.cron.parse_cron`, the schedule's own parser."""
    if key.isdigit():
        return None if int(key) > 0 else f"a cron route's interval must be more than 0 seconds (got {key!r})"
    from active_data_flow.cron import CronError, parse_cron, split_schedule_text

    try:
        parse_cron(*split_schedule_text(key))
    except CronError as exc:
        return (f"a cron route's pattern is the interval in seconds after which the flow is due again, or a "
                f"calendar such as 'CRON_TZ=Europe/Berlin 0 6 * * 1-5' ({exc}); the cron trigger ticks with "
                "--cron-expression and runs the flows that are due")
    return None


def http_route_problem(route: str) -> str | None:
    """Why Spin's HTTP trigger refuses ``route``, or None."""
    if not route.startswith("/"):
        return f"HTTP route {route!r} must start with '/'"
    segments = route.strip("/").split("/") if route.strip("/") else []
    for i, seg in enumerate(segments):
        if not seg:
            return f"HTTP route {route!r} has an empty segment"
        if "..." in seg and (seg != "..." or i != len(segments) - 1):
            return f"HTTP route {route!r}: the '...' wildcard must be the whole last segment"
        if seg.startswith(":") and len(seg) == 1:
            return f"HTTP route {route!r}: a ':' parameter needs a name"
        if any(c.isspace() or c in "?#" for c in seg):
            return f"HTTP route {route!r} contains whitespace, '?' or '#'"
    return None


def mqtt_topic_problem(topic: str) -> str | None:
    """Why ``topic`` is not an MQTT topic filter (``+`` a whole level, ``#`` the whole last one), or None."""
    if not topic:
        return "MQTT topic must not be empty"
    levels = topic.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            return f"MQTT topic {topic!r}: '#' must be the whole last level"
        if "+" in level and level != "+":
            return f"MQTT topic {topic!r}: '+' must be a whole level"
    return None


#: The Spin route of the HTTP component: active_data_flow.handlers.invoke.handle_http serves GET /flows,
#: GET /flows/<name> and GET|POST /flows/<name>/run under it.
HTTP_TRIGGER_ROUTE = "/flows/..."


def http_run_path(flow: str) -> str:
    """The path that runs ``flow`` over HTTP."""
    return f"/flows/{flow}/run"


def default_route_key(kind: str, flow: FlowFile) -> str:
    """The route a flow gets for ``kind`` when none is given: ``/flows/<flow>/run``, Redis
    channel ``<flow>``, MQTT topic ``adf/<flow>``, cron every ``runtime.interval_seconds`` or on ``runtime.schedule``."""
    if kind == "http":
        return http_run_path(flow.name)
    if kind == "redis":
        return flow.name
    if kind == "mqtt":
        return f"adf/{flow.name}"
    return default_cron_key(flow.name, flow.spec.runtime)


def default_cron_key(name: str, runtime: Mapping[str, Any]) -> str:
    """A flow's cron route from its spec: ``runtime.interval_seconds`` (seconds) or
    ``runtime.schedule`` (a calendar, ``CRON_TZ=<zone> <expression>`` outside UTC)."""
    from active_data_flow.cron import schedule_text

    interval, schedule = runtime.get("interval_seconds"), runtime.get("schedule")
    if interval and schedule:
        raise ValueError(f"flow {name} has both runtime.interval_seconds and runtime.schedule: keep one")
    if schedule:
        return schedule_text(schedule["cron"], schedule.get("timezone"))
    if not interval:
        raise ValueError(
            f"flow {name} has neither runtime.interval_seconds nor runtime.schedule: give its cron interval "
            f"with --route cron:SECONDS={name} (or a calendar: --route 'cron:0 6 * * 1-5={name}')"
        )
    return str(interval)


def plan_routes(flows: Sequence[FlowFile], triggers: Sequence[str], routes: Sequence[Route]
                ) -> dict[str, dict[str, str]]:
    """Routes by trigger kind from explicit routes plus defaults:
    ``{"http": {"/flows/f/run": "f"}, "redis": {channel: flow}, "mqtt": {topic: flow},
    "cron": {flow: "<seconds>" or "<calendar>"}}`` (cron is keyed by flow: each flow has one schedule).

    A flow without any ``--route`` gets the default route of every kind in ``triggers``
    (``http`` when neither routes nor triggers are given). A channel or topic runs one flow.
    Raises ``ValueError`` listing every problem.
    """
    names = {f.name: f for f in flows}
    problems: list[str] = []
    plan: dict[str, dict[str, str]] = {}

    def add(kind: str, key: str, flow: str) -> None:
        table = plan.setdefault(kind, {})
        if kind == "cron":
            key, flow = flow, key  # flow -> interval
        if table.get(key, flow) != flow:
            what = {"cron": f"flow {key} gets two cron schedules", "redis": f"redis channel {key!r} routes to two flows",
                    "mqtt": f"mqtt topic {key!r} routes to two flows"}.get(kind, f"{kind} {key!r} routes twice")
            problems.append(f"{what}: {table[key]} and {flow} (one each)")
            return
        table[key] = flow

    routed: set[str] = set()
    for r in routes:
        if r.flow not in names:
            problems.append(f"route {r.kind}{':' + r.key if r.key else ''}={r.flow}: no flow named {r.flow!r} "
                            f"(flows: {', '.join(names)})")
            continue
        routed.add(r.flow)
        try:
            add(r.kind, r.key or default_route_key(r.kind, names[r.flow]), r.flow)
        except ValueError as exc:
            problems.append(str(exc))
    kinds = list(dict.fromkeys(triggers)) or ([] if routes else ["http"])
    for f in flows:
        if f.name in routed:
            continue
        for kind in kinds:
            try:
                add(kind, default_route_key(kind, f), f.name)
            except ValueError as exc:
                problems.append(str(exc))
    for kind in kinds:
        if kind not in plan and not problems:
            problems.append(f"--trigger {kind}: no flow is routed to it (every flow has explicit --route options); "
                            f"add --route {kind}=FLOW")
    if problems:
        raise ValueError("; ".join(problems))
    return {k: plan[k] for k in TRIGGER_KINDS if k in plan}


def http_route_covers(route: str, key: str) -> bool:
    """Whether the Spin HTTP route ``route`` (a path, or a prefix ending in ``/...``) serves ``key``."""
    if route == key:
        return True
    if route.endswith("/..."):
        prefix = route[:-4]
        return key == prefix or key.startswith(prefix + "/") or prefix == ""
    return False
