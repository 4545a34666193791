"""EventBridge schedule → one heartbeat tick (:func:`active_data_flow.handlers.invoke.handle_cron`).

The schedule lives in the database :func:`active_data_flow.lambda_app.secrets.database_url` names — read from
Secrets Manager or SSM at cold start on Lambda, ``ADF_DATABASE_URL`` locally; none configured
fails the invocation (:class:`active_data_flow.handlers.schedule.sql.SqlScheduleStore`): PostgreSQL — RDS /
Aurora — in production, SQLite in tests. Due flows are claimed with
``SELECT … FOR UPDATE SKIP LOCKED``, so overlapping invocations (a slow tick and the next
one, a retry) never run a flow twice. The claimed runs execute in this invocation (sync mode)
with the Lambda host's configuration layers. The schedule is judged at the invocation's
time (not the event's ``time``: a late delivery must still see what is due now).

Returns the tick result (``flows_due``, ``flows_triggered``, ``run_ids``, ``runs``, …); a tick
that could not run (database unreachable) raises, so the invocation is reported failed.
Other settings: :mod:`active_data_flow.handlers.settings` (``ADF_LEASE_SECONDS``, ``ADF_CLAIM_LIMIT``, …).
"""

from __future__ import annotations

import threading
from typing import Any

from aws_lambda_powertools.utilities.data_classes import EventBridgeEvent
from aws_lambda_powertools.utilities.typing import LambdaContext

from active_data_flow.handlers.invoke.cron import handle_cron
from active_data_flow.handlers.settings import load_settings
from active_data_flow.lambda_app.host import get_host, logger, metrics, tracer
from active_data_flow.lambda_app.secrets import database_url

__all__ = ["ScheduleTickError", "handler"]

_stores: dict[str, Any] = {}
_lock = threading.Lock()


class ScheduleTickError(RuntimeError):
    """The tick could not run."""


def _store(url: str) -> Any:
    from active_data_flow.handlers.schedule.sql import SqlScheduleStore

    with _lock:
        store = _stores.get(url)
        if store is None:
            store = _stores[url] = SqlScheduleStore(url)
        return store


@logger.inject_lambda_context(log_event=False, clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics(raise_on_empty_metrics=False)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Lambda entry point (EventBridge ``Scheduled Event`` / EventBridge Scheduler)."""
    if isinstance(event, dict) and event.get("id"):
        scheduled = EventBridgeEvent(event)
        logger.set_correlation_id(scheduled.get_id)
        logger.append_keys(rule=",".join(scheduled.resources or []), event_time=scheduled.time)
    settings = load_settings()
    result = handle_cron(get_host(), _store(database_url()), settings)
    if result.get("status") != "ok":
        metrics.add_metric(name="TickErrors", unit="Count", value=1)
        raise ScheduleTickError(f"{result.get('error')} (error_id {result.get('error_id')})")
    runs = result.get("runs") or []
    metrics.add_metric(name="FlowsTriggered", unit="Count", value=int(result.get("flows_triggered") or 0))
    # a partial run did its work (its refused records are in dead letters): a run, not a failure
    done = sum(1 for r in runs if r["status"] in ("success", "partial"))
    metrics.add_metric(name="FlowRuns", unit="Count", value=done)
    metrics.add_metric(name="FlowFailures", unit="Count", value=len(runs) - done)
    metrics.add_metric(name="DeadLetters", unit="Count", value=sum(int(r.get("dead_letters") or 0) for r in runs))
    return result
