"""``adf rafka …``: manage and use Rafka topics (Kafka-like topics over Redis streams).

Registered through the ``active_data_flow.commands`` entry-point group. Standard library only
at module level; redis-py is imported when a command connects (extra ``redis``).

==============================================================  ===============================================
``adf rafka create-topic T --partitions N [--maxlen N]``         create a topic (``--minid-ms N``: time retention)
``adf rafka produce T [--file F.jsonl] [--key FIELD]``           send JSON lines (stdin without ``--file``)
``adf rafka consume T --group G [--max N] [--from-beginning]``   print records as JSON lines and acknowledge them
``adf rafka describe T [--json]``                                partitions, lengths, groups, consumers, pending, lag
``adf rafka add-partitions T --partitions N``                    grow a topic to N partitions
``adf rafka delete-topic T --yes``                               delete a topic, its entries and its groups
``adf rafka topics``                                             list the topics
==============================================================  ===============================================

Every command takes ``--url`` (default ``$ADF_RAFKA_URL`` or ``redis://127.0.0.1:6379``).
Exit codes: 0 success; 1 Redis could not be reached or refused a command; 2 invalid input (an
unknown topic, a bad line in the input, a missing ``--yes``).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from typing import IO, Any

__all__ = ["register"]

Handler = Callable[[argparse.Namespace], int]


def _err(message: str) -> None:
    print(f"adf: {message}", file=sys.stderr)


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def _guard(handler: Handler) -> Handler:
    """Connection problems and Redis errors become one line on stderr and exit code 1."""

    def run(args: argparse.Namespace) -> int:
        from active_data_flow.errors import AdfError

        try:
            return handler(args)
        except AdfError:
            raise  # adf's main() reports these (exit code 2)
        except Exception as exc:
            module = type(exc).__module__ or ""
            if not module.startswith("redis"):
                raise
            from active_data_flow.redact import redact_text

            _err(f"rafka: {type(exc).__name__}: {redact_text(str(exc))} (url {redact_text(args.url)})")
            return 1

    return run


def _jsonl(stream: IO[str]) -> Iterator[tuple[int, Any]]:
    for n, line in enumerate(stream, 1):
        if not line.strip():
            continue
        try:
            yield n, json.loads(line)
        except ValueError as exc:
            raise ValueError(f"line {n}: not valid JSON: {exc}") from exc


# --------------------------------------------------------------------------- commands


def _cmd_create(args: argparse.Namespace) -> int:
    from active_data_flow.connectors.rafka import Admin, TopicExistsError

    with Admin(args.url) as admin:
        try:
            meta = admin.create_topic(args.topic, args.partitions, args.maxlen, args.minid_ms)
        except TopicExistsError as exc:
            if not args.if_not_exists:
                _err(str(exc))
                return 2
            meta = admin.topic(args.topic)
    retention = ", ".join(f"{k} {v}" for k, v in meta.retention.items()) or "none"
    print(f"topic {meta.name}: {meta.partitions} partition(s), retention {retention}")
    return 0


def _cmd_produce(args: argparse.Namespace) -> int:
    from active_data_flow.connectors.rafka import Producer

    stream: IO[str] = open(args.file, encoding="utf-8") if args.file else sys.stdin
    count = 0
    try:
        with Producer(args.url, max_buffer=args.batch) as producer:
            producer.metadata(args.topic)  # an unknown topic fails before reading the input
            for n, value in _jsonl(stream):
                key = None
                if args.key:
                    if not isinstance(value, dict) or value.get(args.key) is None:
                        _err(f"line {n}: no value for the key field {args.key!r}; {count} record(s) sent before it")
                        return 2
                    key = str(value[args.key])
                producer.send(args.topic, value, key=key, partition=args.partition)
                count += 1
    except ValueError as exc:
        _err(f"{exc}; {count} record(s) sent before it")
        return 2
    finally:
        if args.file:
            stream.close()
    if args.json:
        print(_dumps({"topic": args.topic, "produced": count}))
    else:
        print(count)
    return 0


def _cmd_consume(args: argparse.Namespace) -> int:
    from active_data_flow.connectors.rafka import Consumer

    name = args.consumer or f"adf-cli-{socket.gethostname()}"
    consumer = Consumer(
        args.url, args.topic, args.group, name, start="earliest" if args.from_beginning else "latest",
        block_ms=200,
    )
    out = sys.stdout
    seen = 0
    idle_since = time.monotonic()
    try:
        while args.max is None or seen < args.max:
            want = 500 if args.max is None else min(500, args.max - seen)
            records = consumer.poll(want)
            if not records:
                if args.timeout is not None and time.monotonic() - idle_since >= args.timeout:
                    break
                continue
            idle_since = time.monotonic()
            lines = []
            for r in records:
                if r.error is not None:
                    _err(f"partition {r.partition} entry {r.id}: {r.error} (acknowledged, skipped)")
                    continue
                if args.meta:
                    lines.append(_dumps({"partition": r.partition, "id": r.id, "key": r.key,
                                         "headers": r.headers, "value": r.value}))
                else:
                    lines.append(_dumps(r.value))
            if lines:
                out.write("\n".join(lines) + "\n")
            out.flush()  # printed before acknowledged
            consumer.commit(records)
            seen += len(records)
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
    return 0


def _print_describe(d: dict[str, Any]) -> None:
    retention = ", ".join(f"{k} {v}" for k, v in d["retention"].items()) or "none"
    print(f"topic {d['topic']}: {d['partition_count']} partition(s), {d['length']:,} entries, retention {retention}")
    print(f"  {'partition':>9}  {'length':>10}  {'first id':<22}  last id")
    for p in d["partitions"]:
        print(f"  {p['partition']:>9}  {p['length']:>10,}  {p['first_id'] or '-':<22}  {p['last_id'] or '-'}")
    if not d["groups"]:
        print("  no consumer groups")
    for g in d["groups"]:
        print(f"  group {g['group']}: pending {g['pending']:,}, lag {g['lag']:,}")
        per = {pg["partition"]: pg for pg in d["partitions"]}
        for p in per.values():
            for pg in p["groups"]:
                if pg["group"] == g["group"]:
                    print(f"    partition {p['partition']}: pending {pg['pending']:,}, lag {pg['lag']:,}, "
                          f"last delivered {pg['last_delivered_id']}")
        for c in g["consumers"]:
            print(f"    consumer {c['name']}: pending {c['pending']:,}, idle {c['idle_ms'] / 1000:.1f} s")


def _cmd_describe(args: argparse.Namespace) -> int:
    from active_data_flow.connectors.rafka import Admin

    with Admin(args.url) as admin:
        data = admin.describe(args.topic)
    if args.json:
        print(_dumps(data))
    else:
        _print_describe(data)
    return 0


def _cmd_add_partitions(args: argparse.Namespace) -> int:
    from active_data_flow.connectors.rafka import Admin

    with Admin(args.url) as admin:
        meta = admin.add_partitions(args.topic, args.partitions)
    print(f"topic {meta.name}: {meta.partitions} partition(s)")
    return 0


def _cmd_delete(args: argparse.Namespace) -> int:
    from active_data_flow.connectors.rafka import Admin

    if not args.yes:
        _err(f"deleting topic {args.topic!r} removes its entries and consumer groups; add --yes to confirm")
        return 2
    with Admin(args.url) as admin:
        existed = admin.delete_topic(args.topic)
    if not existed:
        _err(f"rafka topic {args.topic!r} does not exist")
        return 2
    print(f"deleted topic {args.topic}")
    return 0


def _cmd_topics(args: argparse.Namespace) -> int:
    from active_data_flow.connectors.rafka import Admin

    with Admin(args.url) as admin:
        names = admin.list_topics()
        if args.json:
            print(_dumps([{"topic": n, "partitions": admin.topic(n).partitions} for n in names]))
        else:
            for n in names:
                print(n)
    return 0


# --------------------------------------------------------------------------- parser


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def register(subparsers: Any) -> None:
    """Add ``adf rafka …`` to ``adf``'s sub-commands."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url", default=os.environ.get("ADF_RAFKA_URL") or "redis://127.0.0.1:6379",
        help="Redis URL (default $ADF_RAFKA_URL or redis://127.0.0.1:6379)",
    )
    rafka = subparsers.add_parser("rafka", help="Kafka-like topics over Redis streams")
    sub = rafka.add_subparsers(dest="rafka_command", required=True)

    p = sub.add_parser("create-topic", parents=[common], help="create a topic")
    p.add_argument("topic")
    p.add_argument("--partitions", type=_positive, required=True)
    retention = p.add_mutually_exclusive_group()
    retention.add_argument("--maxlen", type=_positive, help="keep about this many entries per partition")
    retention.add_argument("--minid-ms", type=_positive, help="keep about this many milliseconds of entries")
    p.add_argument("--if-not-exists", action="store_true", help="no error when the topic exists")
    p.set_defaults(func=_guard(_cmd_create))

    p = sub.add_parser("produce", parents=[common], help="send JSON lines (a file or stdin) to a topic")
    p.add_argument("topic")
    p.add_argument("--file", help="JSON Lines file (default: stdin)")
    p.add_argument("--key", help="field whose value is each entry's key (partitioning)")
    p.add_argument("--partition", type=int, help="send everything to this partition")
    p.add_argument("--batch", type=_positive, default=1000, help="entries per pipeline (default 1000)")
    p.add_argument("--json", action="store_true", help='print {"topic", "produced"} instead of the count')
    p.set_defaults(func=_guard(_cmd_produce))

    p = sub.add_parser("consume", parents=[common], help="print records as JSON lines and acknowledge them")
    p.add_argument("topic")
    p.add_argument("--group", required=True, help="consumer group")
    p.add_argument("--max", type=_positive, help="stop after this many records")
    p.add_argument("--from-beginning", action="store_true",
                   help="a new group starts at the oldest entry (default: only new entries)")
    p.add_argument("--timeout", type=float, help="stop after this many seconds without a record")
    p.add_argument("--consumer", help="consumer name (default adf-cli-<hostname>)")
    p.add_argument("--meta", action="store_true", help="print {partition, id, key, headers, value} per record")
    p.set_defaults(func=_guard(_cmd_consume))

    p = sub.add_parser("describe", parents=[common], help="partitions, lengths, groups, consumers, pending, lag")
    p.add_argument("topic")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_guard(_cmd_describe))

    p = sub.add_parser("add-partitions", parents=[common], help="grow a topic to N partitions")
    p.add_argument("topic")
    p.add_argument("--partitions", type=_positive, required=True, help="the new total")
    p.set_defaults(func=_guard(_cmd_add_partitions))

    p = sub.add_parser("delete-topic", parents=[common], help="delete a topic with its entries and groups")
    p.add_argument("topic")
    p.add_argument("--yes", action="store_true", help="confirm")
    p.set_defaults(func=_guard(_cmd_delete))

    p = sub.add_parser("topics", parents=[common], help="list topics")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_guard(_cmd_topics))
