"""The ``adf`` command line.

``adf run SPEC`` runs a flow (a ``.yaml``/``.json`` spec or ``module:FlowClass``) with a
progress bar on a terminal (a progress log line every few seconds otherwise) and a summary
at the end; ``--json`` makes the last line of stdout one JSON object. When the flow's sink
is ``stdout`` the records own standard output: the summary goes to standard error.
Exit codes: 0 the run did its work (``success``, ``partial`` — some records dead-lettered —
or a stopped unbounded run), 1 the run failed, 2 the spec or the command line is invalid, or
an unfinished checkpoint belongs to another version of the flow.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from active_data_flow import __version__
from active_data_flow.attributes import describe_attributes
from active_data_flow.config import parse_set_args
from active_data_flow.errors import AdfError, ConfigError
from active_data_flow.logs import configure

__all__ = ["main"]

#: Entry-point group of sub-commands contributed by other layers or packages. An entry point
#: names either a :class:`LazyCommand` (the command's name and help line; its code is imported
#: only when the command is used) or, as before, a callable ``register(subparsers)`` adding its
#: parsers, each with ``func`` set to a handler ``(args) -> exit code`` (imported when its
#: command — the entry point's name — is used, or when the full help is asked for).
COMMANDS_GROUP = "active_data_flow.commands"


class LazyCommand:
    """A plug-in command declared without importing its code.

    ``name`` is the sub-command (``adf NAME …``), ``help`` its one line in ``adf --help``, and
    ``register`` the ``"module:function"`` of its ``register(subparsers)`` function, imported
    only when ``adf NAME …`` runs. Declare it in a module that imports nothing heavy and name
    it in an entry point of the ``active_data_flow.commands`` group whose name is ``name``::

        [project.entry-points."active_data_flow.commands"]
        hello = "my_pkg.adf_commands:HELLO"     # HELLO = LazyCommand("hello", "say hello", "my_pkg.cli:register")

    One ``register`` may add several commands: declare each, with the same ``register``.
    """

    __slots__ = ("help", "name", "register")

    def __init__(self, name: str, help: str, register: str) -> None:
        if ":" not in register:
            raise ValueError(f"LazyCommand {name!r}: register must be 'module:function', got {register!r}")
        self.name = name
        self.help = help
        self.register = register

    def __repr__(self) -> str:
        return f"LazyCommand({self.name!r}, {self.help!r}, {self.register!r})"

    def __call__(self, subparsers: Any) -> None:
        """Import the command's code and add its parsers: a declaration is a ``register`` too."""
        self.load()(subparsers)

    def load(self) -> Callable[[Any], None]:
        """The ``register(subparsers)`` function (imports its module; ``ImportError`` when it cannot)."""
        from importlib import import_module

        module, _, attr = self.register.partition(":")
        obj: Any = import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
        register: Callable[[Any], None] = obj
        return register


# This distribution's own plug-in commands (pyproject.toml's entry points name them): `adf run`
# and the other built-in commands import none of their code, `adf spin …` only the Spin layer's.
_HANDLERS = "active_data_flow.handlers.cli:register"
SERVE_COMMAND = LazyCommand("serve", "the web app: heartbeat endpoint and management API", _HANDLERS)
WORKER_COMMAND = LazyCommand("worker", "run pending runs (heartbeat mode=async)", _HANDLERS)
HEARTBEAT_COMMAND = LazyCommand("heartbeat", "one heartbeat tick from the command line (for cron)", _HANDLERS)
DB_COMMAND = LazyCommand("db", "schedule database", _HANDLERS)
FLOWS_COMMAND = LazyCommand("flows", "scheduled flows", _HANDLERS)
RUNS_COMMAND = LazyCommand("runs", "run history", _HANDLERS)
SPIN_COMMAND = LazyCommand("spin", "Fermyon Spin 3: init, manifest, validate, build, up, deploy",
                           "active_data_flow.spin_app.cli:register")
LAMBDA_COMMAND = LazyCommand("lambda", "AWS Lambda: validate, build and deploy the SAM template",
                             "active_data_flow.lambda_app.cli:register")
FLINK_COMMAND = LazyCommand("flink", "run flows as Apache Flink jobs (PyFlink)", "active_data_flow.flink_job.cli:register")
WASM_COMMAND = LazyCommand("wasm", "WebAssembly modules: registry, signing keys, logs, test runs",
                           "active_data_flow.wasm.cli:register")
RAFKA_COMMAND = LazyCommand("rafka", "Kafka-like topics over Redis streams", "active_data_flow.rafka_cli:register")


def _print_json(obj: Any, stream: Any = None) -> None:
    out = stream or sys.stdout
    out.write(json.dumps(obj, default=str) + "\n")
    out.flush()


def _fail(reason: str, code: int, as_json: bool, **extra: Any) -> int:
    if as_json:
        _print_json({"status": "invalid" if code == 2 else "failed", "error": reason, **extra})
    print(f"adf: {reason}", file=sys.stderr)
    return code


def parse_param_args(items: Sequence[str]) -> dict[str, Any]:
    """Declared parameter values from ``--param NAME=VALUE`` items, as a request gives them:
    text, read as the parameter's declared type when the spec is parsed (``0.19`` for a
    ``number``); a value that starts with ``[`` or ``{`` and is JSON is taken as JSON (for
    ``list``, ``mapping`` and ``json`` parameters). Later items win. Raises
    :class:`~active_data_flow.config.ConfigError` listing every item without ``=`` or without a name."""
    out: dict[str, Any] = {}
    problems: list[str] = []
    for item in items:
        name, sep, raw = item.partition("=")
        name = name.strip()
        if not sep or not name:
            problems.append(f"--param {item!r}: write NAME=VALUE, e.g. --param vat=0.19")
            continue
        value: Any = raw
        if raw.lstrip()[:1] in ("[", "{"):
            try:
                value = json.loads(raw)
            except ValueError:
                value = raw
        out[name] = value
    if problems:
        raise ConfigError("--param", problems)
    return out


def _load(args: argparse.Namespace) -> Any:
    from active_data_flow.loader import load_flow

    payload = parse_set_args(args.set or [])
    params = parse_param_args(getattr(args, "param", None) or [])
    return load_flow(args.spec, payload=payload or None, payload_origin="--set", params=params or None)


# --------------------------------------------------------------------------- run


class _ProgressBar:
    """A rich progress bar on stderr (bytes when the source knows its size, else records)."""

    def __init__(self, flow: str) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[counts]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            transient=False,
            console=Console(stderr=True),
        )
        self.task = self.progress.add_task(flow, total=None, counts="")

    def __enter__(self) -> _ProgressBar:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def update(self, p: Any) -> None:
        counts = f"in {p.records_in:,} out {p.records_out:,} dead {p.dead_letters:,}"
        if p.bytes_total:
            self.progress.update(self.task, total=p.bytes_total, completed=p.bytes_done, counts=counts)
        else:
            self.progress.update(self.task, counts=counts)


class _ProgressLines:
    """A progress log line every ``every`` seconds (standard error is not a terminal)."""

    def __init__(self, flow: str, every: float) -> None:
        import time

        self.flow = flow
        self.every = every
        self.clock = time.monotonic
        self.started = self.next = self.clock()
        if every > 0:
            self.next += every

    def update(self, p: Any) -> None:
        now = self.clock()
        if self.every <= 0 or now < self.next:
            return
        self.next = now + self.every
        from active_data_flow.logs import get_logger, log_event

        elapsed = now - self.started
        fields: dict[str, Any] = {
            "flow": self.flow, "records_in": p.records_in, "records_out": p.records_out,
            "filtered": p.filtered, "dead_letters": p.dead_letters, "elapsed_s": round(elapsed, 1),
            "records_per_s": round(p.records_in / elapsed) if elapsed > 0 else 0,
        }
        if p.bytes_total:
            fields["percent"] = round(100.0 * p.bytes_done / p.bytes_total, 1)
        log_event(get_logger("progress"), "progress", **fields)


def _progress_interval() -> float:
    try:
        return float(os.environ.get("ADF_PROGRESS_INTERVAL_S", "5"))
    except ValueError:
        return 5.0


def _cmd_run(args: argparse.Namespace) -> int:
    from active_data_flow import telemetry
    from active_data_flow.runtime import run

    loaded = _load(args)  # invalid specs: main() reports them with exit code 2
    telemetry.configure_from_env()  # OpenTelemetry from the standard OTEL_* variables, when they are set
    spec = loaded.spec
    if args.parallelism:
        spec.runtime["parallelism"] = args.parallelism
    # records on stdout: the summary must not land among them
    out = sys.stderr if spec.sink.get("type") == "stdout" else sys.stdout
    show_bar = not args.no_progress and sys.stderr.isatty()
    kwargs: dict[str, Any] = {
        "resume": not args.fresh, "store": loaded.store, "state_dir": args.state_dir,
        "on_spec_change": "resume" if args.resume_anyway else "refuse",
    }
    if show_bar:
        with _ProgressBar(spec.name) as bar:
            summary = run(spec, on_progress=bar.update, **kwargs)
    elif not args.no_progress:
        summary = run(spec, on_progress=_ProgressLines(spec.name, _progress_interval()).update, **kwargs)
    else:
        summary = run(spec, **kwargs)
    if loaded.store is not None:
        loaded.store.close()
    telemetry.flush()
    data = summary.to_dict()
    if args.json:
        _print_json(data, out)
    else:
        _print_summary(data, out)
    if not summary.ok:
        print(f"adf: run failed: {summary.error_type}: {summary.error}", file=sys.stderr)
        return 1
    return 0


_MARKS = {"success": "ok", "stopped": "ok", "partial": "PARTIAL"}


def _print_summary(s: dict[str, Any], out: Any = None) -> None:
    from active_data_flow.outcome import describe_dead_letters

    mark = _MARKS.get(s["status"], "FAILED")
    rate = s["records_in"] / s["duration_s"] if s["duration_s"] else 0.0
    counts = f"  records in {s['records_in']:,}, out {s['records_out']:,}, filtered {s['filtered']:,}, dead letters {s['dead_letters']:,}"
    if s.get("fanned_out"):
        counts += f", added by steps {s['fanned_out']:,}"
    if s.get("in_flight"):
        counts += f", in flight {s['in_flight']:,} (read again when the run resumes)"
    lines = [
        f"{mark}: flow {s['flow']} {s['status']} (run {s['run_id']}{', resumed' if s['resumed'] else ''})",
        counts,
        f"  duration {s['duration_s']:.2f} s ({rate:,.0f} records/s), parallelism {s['parallelism']}",
        f"  sink: {s['sink']}",
    ]
    if s["error"]:
        lines.append(f"  error: {s['error_type']}: {s['error']}")
    for warning in s.get("warnings") or []:
        repeated = f" (x{warning['count']:,})" if isinstance(warning.get("count"), int) and warning["count"] > 1 else ""
        lines.append(f"  warning: {warning.get('message', warning)}{repeated}")
    for change in s.get("schema_changes") or []:
        lines.append(f"  schema: added column {change.get('column')} {change.get('type')} to {change.get('table')}")
    if s["dead_letters"]:
        # last, so that `| tail -n 1` shows what needs attention
        where = s.get("dead_letter_destination") or "the dead-letter destination"
        lines.append(
            f"  {describe_dead_letters(s['dead_letters'], s.get('dead_letter_reasons') or [])} — dead letters went to: "
            f"{where} (`adf dead-letters show {s['run_id']}`; after a fix, `adf dead-letters replay {s['run_id']}`)"
        )
    print("\n".join(lines), file=out or sys.stdout, flush=True)


# --------------------------------------------------------------------------- validate / explain / connectors


def _cmd_validate(args: argparse.Namespace) -> int:
    try:
        loaded = _load(args)
    except ConfigError as exc:
        if args.json:
            _print_json({"valid": False, "problems": exc.problems})
        else:
            print(f"invalid: {len(exc.problems)} problem(s)")
            for p in exc.problems:
                print(f"  - {p}")
        return 2
    except AdfError as exc:
        return _fail(str(exc), 2, args.json)
    spec = loaded.spec
    if args.json:
        _print_json({"valid": True, "name": spec.name})
    else:
        print(f"valid: flow {spec.name} ({spec.source['type']} -> {len(spec.steps)} step(s) -> {spec.sink['type']})")
    return 0


def _cmd_config_explain(args: argparse.Namespace) -> int:
    loaded = _load(args)  # invalid specs: main() reports them with exit code 2
    cfg = loaded.config
    if args.json:
        _print_json(
            {
                "values": cfg.as_dict_redacted(),
                "explain": [
                    {"path": e.path, "value": e.value, "layer": e.layer, "origin": e.origin,
                     "overridden": [list(o) for o in e.overridden]}
                    for e in cfg.explain()
                ],
            }
        )
    else:
        print(cfg.explain_text())
    return 0


def _cmd_connectors(args: argparse.Namespace) -> int:
    from active_data_flow.registry import KINDS, registry

    out: dict[str, list[dict[str, Any]]] = {}
    for kind in KINDS:
        rows = []
        for name in registry.names(kind):
            row: dict[str, Any] = {"type": name, "origin": registry.origin(kind, name)}
            try:
                cls = registry.resolve(kind, name)
                row["attributes"] = describe_attributes(getattr(cls, "attributes", ()))
                doc = (cls.__doc__ or "").strip().splitlines()
                row["summary"] = doc[0] if doc else ""
            except AdfError as exc:
                row["unavailable"] = str(exc)
            rows.append(row)
        out[kind + "s"] = rows
    if args.json:
        _print_json(out)
        return 0
    for kind, rows in out.items():
        print(f"{kind}:")
        for row in rows:
            status = f"  (unavailable: {row['unavailable']})" if "unavailable" in row else ""
            print(f"  {row['type']:<10} {row.get('summary', '')}{status}")
            for a in row.get("attributes", []):
                req = "required" if a["required"] else f"default {a['default']!r}" if "default" in a else "optional"
                flags = ", secret" if a.get("secret") else ""
                print(f"      {a['name']:<20} {a['type']:<10} {req}{flags}")
    return 0


def _cmd_schema(args: argparse.Namespace) -> int:
    from active_data_flow.spec_schema import SCHEMA_ID, flow_schema, write_schema

    write_schema(flow_schema(no_plugins=args.no_plugins, schema_id=args.id or SCHEMA_ID), args.output)
    return 0


# --------------------------------------------------------------------------- dead letters


def _state_root(args: argparse.Namespace) -> str:
    from active_data_flow.engine import default_state_root

    return os.path.abspath(args.state_dir) if args.state_dir else default_state_root()


def _cmd_dead_letters_list(args: argparse.Namespace) -> int:
    from active_data_flow.dead_letters import find_run, list_runs, read_letters

    root = _state_root(args)
    if not args.run:
        runs = list_runs(root, args.flow)
        if args.json:
            _print_json(runs)
        elif not runs:
            print(f"no run has dead letters in {root}")
        for r in runs if not args.json else []:
            print(f"{r['run_id']:<32} {r['flow']:<24} {r['status']!s:<8} {r['dead_letters']:>8,} dead letter(s)")
        return 0
    letters = read_letters(find_run(args.run, root))
    if args.json:
        _print_json([{k: v for k, v in d.items() if k != "record"} for d in letters])
        return 0
    for d in letters:
        origin = ", ".join(f"{k}={v}" for k, v in (d.get("origin") or {}).items() if not isinstance(v, dict))
        where = f"{d.get('stage')}{':' + str(d['step']) if d.get('step') else ''}"
        print(f"#{d['number']:<6} {where:<28} {origin:<40} {d.get('reason')}")
    return 0


def _cmd_dead_letters_show(args: argparse.Namespace) -> int:
    from active_data_flow.dead_letters import find_run, read_letters

    letters = read_letters(find_run(args.run, _state_root(args)))
    wanted = set(args.number or [])
    for d in letters:
        if not wanted or d["number"] in wanted:
            _print_json(d)
    return 0


def _cmd_dead_letters_replay(args: argparse.Namespace) -> int:
    from active_data_flow.dead_letters import find_run, replay
    from active_data_flow.loader import load_flow

    run = find_run(args.run, _state_root(args))
    ref = args.spec or run.flow_info().get("origin") or ""
    if ref.startswith("class "):
        ref = ref[len("class "):]
    if not ref or ref in ("payload spec",):
        raise AdfError(
            f"the spec of flow {run.flow!r} is not known for run {run.run_id}: give it, "
            f"`adf dead-letters replay {args.run} SPEC`"
        )
    loaded = load_flow(ref, payload=parse_set_args(args.set or []) or None, payload_origin="--set")
    try:
        outcome = replay(run, loaded.spec, store=loaded.store)
    finally:
        if loaded.store is not None:
            loaded.store.close()
    if args.json:
        _print_json({"flow": run.flow, "run_id": run.run_id, **outcome})
    else:
        print(
            f"replayed {outcome['replayed']:,} dead letter(s) of run {run.run_id} through flow {run.flow}: "
            f"written {outcome['written']:,}, filtered {outcome['filtered']:,}, failed again {outcome['dead_letters']:,}"
            + (f", not replayable (malformed input) {outcome['kept']:,}" if outcome["kept"] else "")
            + f"; {outcome['remaining']:,} remain"
        )
    return 0 if outcome["remaining"] == 0 else 1


# --------------------------------------------------------------------------- parser


def _add_spec_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", help="flow spec (.yaml/.json) or module:FlowClass")
    p.add_argument("--set", action="append", metavar="PATH=VALUE", help="override a value (payload layer), e.g. source.path=x.csv")
    p.add_argument("--param", action="append", metavar="NAME=VALUE",
                   help="a value of a parameter the flow declares (its params: section), as a request would give it")
    p.add_argument("--json", action="store_true", help="machine-readable output: the last stdout line is a JSON object")


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The ``adf`` parser, with the plug-in commands ``argv`` needs: none when it names a built-in
    command (``run``, ``validate``…), only the one it names when that is a plug-in command's entry
    point, and every one otherwise (no ``argv``, ``--help``, no or an unknown command) — declared
    ones (:class:`LazyCommand`) from their declarations, the others by importing them."""
    parser = argparse.ArgumentParser(prog="adf", description="ActiveDataFlow: run data flows (source -> steps -> sink).")
    parser.add_argument("--log-level", default=None, help="debug, info, warning, error (default: info, warning on a terminal)")
    parser.add_argument("--version", action="version", version=f"adf {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a flow")
    _add_spec_args(run)
    run.add_argument("--parallelism", type=int, help="parallel readers (overrides runtime.parallelism)")
    run.add_argument("--fresh", action="store_true", help="ignore an unfinished checkpoint and start over")
    run.add_argument("--resume-anyway", action="store_true",
                     help="resume an unfinished checkpoint although the flow's steps, schema or sink changed "
                          "(never when its source changed)")
    run.add_argument("--state-dir", help="checkpoints and dead letters (default $ADF_STATE_DIR or ./.adf)")
    run.add_argument("--no-progress", action="store_true",
                     help="no progress bar (and no progress log lines when standard error is not a terminal)")
    run.set_defaults(func=_cmd_run)

    val = sub.add_parser("validate", help="check a flow spec and report every problem")
    _add_spec_args(val)
    val.set_defaults(func=_cmd_validate)

    con = sub.add_parser("connectors", help="list installed sources, sinks, steps and runtimes")
    con.add_argument("--json", action="store_true")
    con.set_defaults(func=_cmd_connectors)

    sch = sub.add_parser("schema", help="print the JSON Schema (draft 2020-12) of flow specs for the installed types")
    sch.add_argument("--output", "-o", metavar="FILE", help="write it to FILE (default: standard output)")
    sch.add_argument("--no-plugins", action="store_true",
                     help="only this distribution's own types, not those plug-ins add (docs/flow.schema.json)")
    sch.add_argument("--id", metavar="URI", help="the schema's $id (default urn:active-data-flow:flow-spec)")
    sch.set_defaults(func=_cmd_schema)

    cfg = sub.add_parser("config", help="configuration tools")
    cfg_sub = cfg.add_subparsers(dest="config_command", required=True)
    exp = cfg_sub.add_parser("explain", help="show every resolved value and the layer it came from")
    _add_spec_args(exp)
    exp.set_defaults(func=_cmd_config_explain)

    dl = sub.add_parser("dead-letters", help="list, show and replay the dead letters of runs")
    dl_sub = dl.add_subparsers(dest="dead_letters_command", required=True)
    dl_list = dl_sub.add_parser("list", help="the runs with dead letters, or the dead letters of one run")
    dl_list.add_argument("run", nargs="?", help="a run id (or FLOW/RUN_ID)")
    dl_list.add_argument("--flow", help="only this flow's runs")
    dl_list.set_defaults(func=_cmd_dead_letters_list)
    dl_show = dl_sub.add_parser("show", help="a run's dead letters in full (records, origins, reasons) as JSON lines")
    dl_show.add_argument("run", help="a run id (or FLOW/RUN_ID)")
    dl_show.add_argument("number", nargs="*", type=int, help="only these dead letters (numbers from `list`)")
    dl_show.set_defaults(func=_cmd_dead_letters_show)
    dl_replay = dl_sub.add_parser(
        "replay", help="send a run's dead letters through the flow as it is now; exit 1 when some remain"
    )
    dl_replay.add_argument("run", help="a run id (or FLOW/RUN_ID)")
    dl_replay.add_argument("spec", nargs="?", help="the flow's spec (default: the one the run was started with)")
    dl_replay.add_argument("--set", action="append", metavar="PATH=VALUE", help="override a value of the spec")
    dl_replay.set_defaults(func=_cmd_dead_letters_replay)
    for p in (dl_list, dl_show, dl_replay):
        p.add_argument("--state-dir", help="the state directory (default $ADF_STATE_DIR or ./.adf)")
        p.add_argument("--json", action="store_true", help="machine-readable output")

    word = None if argv is None else command_word(argv)
    if word is None or word not in sub.choices:
        _add_plugin_commands(sub, word)
    return parser


def command_word(argv: Sequence[str]) -> str | None:
    """The sub-command ``argv`` names (its first word that is not an option or an option's value),
    or None when there is none or the top-level help comes first (``adf -h``, ``adf --help spin``)."""
    tokens = iter(argv)
    for token in tokens:
        if token == "--":
            return next(tokens, None)
        if token == "-h":
            return None
        if token == "-" or not token.startswith("-"):
            return token
        name, eq, _ = token.partition("=")
        if len(name) > 2 and "--help".startswith(name):
            return None
        if len(name) > 2 and "--log-level".startswith(name) and not eq:
            next(tokens, None)  # its value
    return None


def _unavailable(sub: Any, name: str, exc: ImportError) -> None:
    reason = f"`adf {name}` is unavailable: {exc}"

    def unavailable(args: argparse.Namespace) -> int:
        print(f"adf: {reason}", file=sys.stderr)
        return 2

    sub.add_parser(name, help="(unavailable)").set_defaults(func=unavailable)


def _declared(sub: Any, command: LazyCommand) -> None:
    """``command`` in the listing only; were it chosen, it says how to run it."""

    def deferred(args: argparse.Namespace) -> int:
        print(f"adf: {command.name}: run it as `adf {command.name} …` (its options were not loaded)", file=sys.stderr)
        return 2

    sub.add_parser(command.name, help=command.help).set_defaults(func=deferred)


def _add_plugin_commands(sub: Any, word: str | None) -> None:
    """Add the plug-in commands: the one entry point named ``word`` alone when there is one, else all."""
    from importlib import metadata

    entry_points = sorted(metadata.entry_points(group=COMMANDS_GROUP), key=lambda e: e.name)
    named = [ep for ep in entry_points if word is not None and ep.name == word]
    for ep in named[:1] or entry_points:
        try:
            target: Callable[[Any], None] = ep.load()
            if isinstance(target, LazyCommand):
                if not named:
                    _declared(sub, target)
                    continue
                target = target.load()
        except ImportError as exc:
            _unavailable(sub, ep.name, exc)
            continue
        target(sub)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    level = args.log_level or ("warning" if sys.stderr.isatty() else "info")
    configure(os.environ.get("ADF_LOG_LEVEL", level))
    try:
        result: int = args.func(args)
        return result
    except ConfigError as exc:
        return _fail(str(exc), 2, getattr(args, "json", False), problems=exc.problems)
    except AdfError as exc:
        return _fail(str(exc), 2, getattr(args, "json", False))
    except KeyboardInterrupt:
        print("adf: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
