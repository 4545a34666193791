"""``adf`` sub-commands of the heartbeat runtime: serve, worker, heartbeat, db, flows, runs.

Registered through the ``active_data_flow.commands`` entry-point group, so ``core`` does not
import this layer. Heavy imports (SQLAlchemy, FastAPI) happen inside the commands.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from active_data_flow.handlers.schedule.store import FlowValidationError, NotFoundError, ScheduleStore
from active_data_flow.handlers.settings import Settings, SettingsError, load_settings

__all__ = ["register"]

Handler = Callable[[argparse.Namespace], int]
#: Run statuses `adf flows trigger` exits 0 for: the run did its work (``partial``: some
#: records were dead-lettered, below the flow's limit) or waits for a worker.
_OK_RUN_STATUSES = ("success", "partial", "pending")


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    if getattr(args, "database_url", None):
        overrides["ADF_DATABASE_URL"] = args.database_url
    return load_settings(overrides=overrides)


def _store(settings: Settings) -> ScheduleStore:
    from active_data_flow.handlers.schedule.sql import SqlScheduleStore

    return SqlScheduleStore(settings.database_url)


def _emit(args: argparse.Namespace, data: Any, text: str) -> None:
    if getattr(args, "json", False):
        sys.stdout.write(json.dumps(data, default=str) + "\n")
    else:
        print(text)


def _guard(handler: Handler) -> Handler:
    """Turn the errors users cause into a message and exit code 2 (1 for missing things)."""

    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except SettingsError as exc:
            print(f"adf: {exc}", file=sys.stderr)
            return 2
        except FlowValidationError as exc:
            if getattr(args, "json", False):
                sys.stdout.write(json.dumps({"error": "invalid flow", "problems": exc.problems}) + "\n")
            print(f"adf: flow refused: {len(exc.problems)} problem(s)", file=sys.stderr)
            for p in exc.problems:
                print(f"  - {p}", file=sys.stderr)
            return 2
        except NotFoundError as exc:
            print(f"adf: {exc}", file=sys.stderr)
            return 1

    return run


# --------------------------------------------------------------------------- commands


def _serve(args: argparse.Namespace) -> int:
    from active_data_flow.handlers.web.app import serve

    settings = _settings(args)
    serve(settings, host=args.host, port=args.port)
    return 0


def _worker(args: argparse.Namespace) -> int:
    from active_data_flow.handlers.scheduler import Worker

    settings = _settings(args)
    store = _store(settings)
    worker = Worker(store, settings, worker_id=args.id, poll_seconds=args.poll)
    try:
        if args.once:
            run = worker.run_once()
            _emit(args, run.to_dict() if run else None, _run_line(run) if run else "no pending run")
            return 0
        worker.run_forever()
        return 0
    finally:
        store.close()


def _heartbeat(args: argparse.Namespace) -> int:
    from active_data_flow.handlers.scheduler import tick

    settings = _settings(args)
    store = _store(settings)
    try:
        result = tick(store, settings, trigger="cli", mode=args.mode)
        data = result.to_dict()
        store.log_heartbeat(
            client="cli", outcome="ok", status_code=0,
            flows_due=result.flows_due, flows_triggered=result.flows_triggered,
        )
        # Sync mode: the runs this tick executed, as `adf runs list` shows them. Like the
        # HTTP heartbeat, the tick succeeded whatever its runs did (exit 0).
        data["runs"] = [r.to_dict() for r in result.runs] if result.mode == "sync" else []
        text = f"flows due {data['flows_due']}, triggered {data['flows_triggered']}, runs {data['run_ids']}"
        _emit(args, data, "\n".join([text, *(_run_line(r) for r in result.runs if result.mode == "sync")]))
        return 0
    finally:
        store.close()


def _db_upgrade(args: argparse.Namespace) -> int:
    from active_data_flow.handlers.schedule.sql import current_revision, upgrade
    from active_data_flow.redact import redact_text

    settings = _settings(args)
    upgrade(settings.database_url)
    print(f"database {redact_text(settings.database_url)} at revision {current_revision(settings.database_url)}")
    return 0


def _db_current(args: argparse.Namespace) -> int:
    from active_data_flow.handlers.schedule.sql import current_revision

    print(current_revision(_settings(args).database_url) or "(empty: run `adf db upgrade`)")
    return 0


def _flow_line(flow: Any) -> str:
    state = "enabled " if flow.enabled else "disabled"
    nxt = flow.next_run.isoformat(timespec="seconds") if flow.next_run else "-"
    when = (f"cron {flow.schedule_cron!r} {flow.schedule_timezone}" if flow.schedule_cron
            else f"every {flow.run_interval:>6}s")
    return f"{flow.name:<30} {state} {when}  last {flow.last_run_status or '-':<11} next {nxt}"


def _run_line(run: Any) -> str:
    duration = f"{run.duration:.2f}s" if run.duration is not None else "-"
    counts = f"in {run.records_in} out {run.records_out} dead {run.dead_letters}" if run.records_in is not None else ""
    line = f"#{run.id:<6} {run.flow_name:<30} {run.status:<11} {run.trigger:<9} attempt {run.attempt} {duration:>8} {counts}"
    # failed: the error; partial: how many records were dead-lettered and why
    message = (run.error_message or "").strip().splitlines()
    return f"{line}  {message[0][:160]}" if message else line


def _with_store(fn: Callable[[argparse.Namespace, ScheduleStore], int]) -> Handler:
    def run(args: argparse.Namespace) -> int:
        store = _store(_settings(args))
        try:
            return fn(args, store)
        finally:
            store.close()

    return _guard(run)


def _flows_add(args: argparse.Namespace, store: ScheduleStore) -> int:
    from active_data_flow.errors import AdfError
    from active_data_flow.spec import load_spec_file

    try:
        configuration = load_spec_file(args.spec)
    except AdfError as exc:
        raise FlowValidationError([str(exc)]) from exc
    # NAME is the scheduled flow's identity (its checkpoints and run lock follow it), so one
    # spec file can be scheduled under several names.
    configuration["name"] = args.name
    # Step modules beside the spec file stay importable when the heartbeat runs it later.
    spec_dir = os.path.dirname(os.path.abspath(args.spec))
    python_path = list(configuration.get("python_path") or [])
    if spec_dir not in python_path:
        configuration["python_path"] = [*python_path, spec_dir]
    schedule = None if args.cron is None else {"cron": args.cron, "timezone": args.timezone or "UTC"}
    interval = args.interval
    if interval is None and schedule is None:  # the spec's own: runtime.interval_seconds or runtime.schedule
        runtime = configuration.get("runtime") or {}
        interval, schedule = runtime.get("interval_seconds"), runtime.get("schedule")
    flow = store.create_flow(
        args.name, configuration, interval, description=args.description or "", enabled=not args.disabled,
        schedule=schedule,
    )
    _emit(args, flow.to_dict(), f"added {_flow_line(flow)}")
    return 0


def _flows_list(args: argparse.Namespace, store: ScheduleStore) -> int:
    flows = store.list_flows()
    _emit(args, [f.to_dict() for f in flows], "\n".join(_flow_line(f) for f in flows) or "no flows")
    return 0


def _flows_show(args: argparse.Namespace, store: ScheduleStore) -> int:
    flow = store.get_flow(args.name)
    _emit(args, flow.to_dict(), json.dumps(flow.to_dict(), indent=2, default=str))
    return 0


def _flows_enable(args: argparse.Namespace, store: ScheduleStore) -> int:
    flow = store.update_flow(args.name, enabled=True)
    _emit(args, flow.to_dict(), _flow_line(flow))
    return 0


def _flows_disable(args: argparse.Namespace, store: ScheduleStore) -> int:
    flow = store.update_flow(args.name, enabled=False)
    _emit(args, flow.to_dict(), _flow_line(flow))
    return 0


def _flows_trigger(args: argparse.Namespace, store: ScheduleStore) -> int:
    from active_data_flow.handlers.scheduler import trigger_run

    run = trigger_run(store, _settings(args), args.name, trigger="cli", wait=not args.no_wait)
    _emit(args, run.to_dict(), _run_line(run))
    return 0 if run.status in _OK_RUN_STATUSES else 1


def _flows_remove(args: argparse.Namespace, store: ScheduleStore) -> int:
    store.delete_flow(args.name)
    _emit(args, {"deleted": args.name}, f"removed {args.name}")
    return 0


def _runs_list(args: argparse.Namespace, store: ScheduleStore) -> int:
    runs = store.list_runs(flow=args.flow, status=args.status, limit=args.limit)
    _emit(args, [r.to_dict() for r in runs], "\n".join(_run_line(r) for r in runs) or "no runs")
    return 0


def _runs_show(args: argparse.Namespace, store: ScheduleStore) -> int:
    run = store.get_run(args.id)
    _emit(args, run.to_dict(), json.dumps(run.to_dict(), indent=2, default=str))
    return 0


# --------------------------------------------------------------------------- parsers


def _common(p: argparse.ArgumentParser, json_flag: bool = True) -> argparse.ArgumentParser:
    p.add_argument("--database-url", help="schedule database (default: ADF_DATABASE_URL or the embedded SQLite file)")
    if json_flag:
        p.add_argument("--json", action="store_true", help="machine-readable output")
    return p


def _leaf(sub: Any, name: str, help_text: str, handler: Handler, args: Sequence[tuple[Sequence[str], dict[str, Any]]] = ()) -> None:
    p = _common(sub.add_parser(name, help=help_text))
    for flags, kwargs in args:
        p.add_argument(*flags, **kwargs)
    p.set_defaults(func=handler)


def register(sub: Any) -> None:
    """Add the heartbeat runtime's sub-commands to ``adf``."""
    serve = _common(sub.add_parser("serve", help="the web app: heartbeat endpoint and management API"), json_flag=False)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.set_defaults(func=_guard(_serve))

    worker = _common(sub.add_parser("worker", help="run pending runs (heartbeat mode=async)"))
    worker.add_argument("--once", action="store_true", help="run at most one pending run, then exit")
    worker.add_argument("--poll", type=float, default=1.0, help="seconds between looks for work")
    worker.add_argument("--id", help="worker id (default host:pid)")
    worker.set_defaults(func=_guard(_worker))

    hb = _common(sub.add_parser("heartbeat", help="one heartbeat tick from the command line (for cron)"))
    hb.add_argument("--mode", choices=("sync", "async"), help="default: ADF_HEARTBEAT_MODE")
    hb.set_defaults(func=_guard(_heartbeat))

    db = sub.add_parser("db", help="schedule database")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    _leaf(db_sub, "upgrade", "apply migrations", _guard(_db_upgrade))
    _leaf(db_sub, "current", "show the migration revision", _guard(_db_current))

    flows = sub.add_parser("flows", help="scheduled flows")
    fs = flows.add_subparsers(dest="flows_command", required=True)
    name = (("name",), {"help": "flow name"})
    _leaf(fs, "add", "schedule a flow (an interval flow is due at once)", _with_store(_flows_add), [
        name,
        (("--spec",), {"required": True, "help": "flow spec file (.yaml/.json)"}),
        (("--interval",), {"type": int, "help": "seconds between runs (or --cron; neither: the spec's "
                                                "runtime.interval_seconds or runtime.schedule)"}),
        (("--cron",), {"help": "a cron schedule instead of --interval: minute hour day-of-month month "
                                "day-of-week, e.g. '0 6 * * 1-5'"}),
        (("--timezone",), {"help": "the zone --cron is read in, e.g. Europe/Berlin (default UTC)"}),
        (("--description",), {}),
        (("--disabled",), {"action": "store_true", "help": "add it disabled"}),
    ])
    _leaf(fs, "list", "list flows", _with_store(_flows_list))
    _leaf(fs, "show", "show one flow", _with_store(_flows_show), [name])
    _leaf(fs, "enable", "enable a flow", _with_store(_flows_enable), [name])
    _leaf(fs, "disable", "disable a flow", _with_store(_flows_disable), [name])
    _leaf(fs, "trigger", "run a flow now", _with_store(_flows_trigger), [
        name, (("--no-wait",), {"action": "store_true", "help": "leave it pending for a worker"}),
    ])
    _leaf(fs, "remove", "delete a flow and its runs", _with_store(_flows_remove), [name])

    runs = sub.add_parser("runs", help="run history")
    rs = runs.add_subparsers(dest="runs_command", required=True)
    _leaf(rs, "list", "list runs, newest first", _with_store(_runs_list), [
        (("--flow",), {}), (("--status",), {}), (("--limit",), {"type": int, "default": 50}),
    ])
    _leaf(rs, "show", "show one run", _with_store(_runs_show), [(("id",), {"type": int})])
