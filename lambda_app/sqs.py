"""SQS batch → one flow run per message, with partial batch failure reporting.

Each message body is a flow invocation ``{"flow": name, "records": [...], "params": {...}}``
(``params``: values of the flow's declared parameters; any other key refuses the message, see
:mod:`active_data_flow.handlers.invoke.params`), or a bare array of records (or an object without ``flow``) whose
flow is the message attribute ``flow`` (String), else ``ADF_DEFAULT_FLOW``
(:func:`active_data_flow.handlers.invoke.events.parse_flow_message`).
A malformed body, an unknown flow, a refused key or parameter value or a failed run makes *that* message
fail: it is listed in ``{"batchItemFailures": [{"itemIdentifier": messageId}]}`` (the event
source mapping needs ``FunctionResponseTypes: [ReportBatchItemFailures]``) and SQS redelivers
it — after ``maxReceiveCount`` it goes to the queue's dead-letter queue; nothing is swallowed.
The other messages succeed.

With ``ADF_IDEMPOTENCY_TABLE`` set, a message whose flow and body were already processed
(a redelivery, even with a new message id) does not run again (:mod:`active_data_flow.lambda_app.idempotency`).
"""

from __future__ import annotations

import os
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.base import FailureResponse
from aws_lambda_powertools.utilities.batch.exceptions import ExceptionInfo
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from active_data_flow.handlers.invoke.errors import FlowFailed
from active_data_flow.handlers.invoke.events import parse_flow_message, run_event_flow
from active_data_flow.lambda_app.host import count_run, get_host, logger, metrics, tracer
from active_data_flow.lambda_app.idempotency import once

__all__ = ["handler", "process_record"]


class _LoggedBatchProcessor(BatchProcessor):
    """Powertools' ``BatchProcessor`` that logs why each message failed (one line per message,
    with its id and the reason)."""

    def failure_handler(self, record: Any, exception: ExceptionInfo) -> FailureResponse:
        kind, exc = exception[0], exception[1]
        reason = f"{kind.__name__ if kind else 'Error'}: {exc}"
        logger.warning("message failed", extra={"message_id": getattr(record, "message_id", None), "reason": reason})
        return super().failure_handler(record, exception)


# A batch whose every message failed is answered with every message listed too (not an exception).
processor = _LoggedBatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
_context: list[Any] = [None]


def _attribute_flow(record: SQSRecord) -> str | None:
    raw = record.raw_event.get("messageAttributes") or {}
    attr = raw.get("flow") if isinstance(raw, dict) else None
    value = attr.get("stringValue") if isinstance(attr, dict) else None
    return value or os.environ.get("ADF_DEFAULT_FLOW") or None


@tracer.capture_method(capture_response=False)
def process_record(record: SQSRecord) -> dict[str, Any]:
    """Run the flow of one message; raises (→ the message is reported failed) on any problem."""
    logger.set_correlation_id(record.message_id)
    flow, payload = parse_flow_message(record.body, flow=_attribute_flow(record))
    host = get_host()

    def run(_key: dict[str, Any]) -> dict[str, Any]:
        try:
            invocation = run_event_flow(host, flow, payload, trigger="sqs", request_id=record.message_id,
                                        fields={"message_id": record.message_id})
        except FlowFailed as exc:
            count_run(exc.invocation, ok=False)
            raise
        count_run(invocation, ok=True)
        s = invocation.summary
        return {"flow": flow, "run_id": s.run_id, "status": s.status, "records_in": s.records_in,
                "records_out": s.records_out, "dead_letters": s.dead_letters}

    return once(run, {"trigger": "sqs", "flow": flow, "body": record.body}, _context[0])


@logger.inject_lambda_context(log_event=False, clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics(raise_on_empty_metrics=False)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Lambda entry point (SQS event source mapping with ReportBatchItemFailures)."""
    _context[0] = context
    result = process_partial_response(event=event, record_handler=process_record, processor=processor, context=context)
    failed = len(result.get("batchItemFailures", []))
    metrics.add_metric(name="SqsMessages", unit="Count", value=len(event.get("Records") or []))
    if failed:
        metrics.add_metric(name="SqsFailedMessages", unit="Count", value=failed)
        logger.warning("batch had failed messages", extra={"failed": failed, "messages": len(event.get("Records") or [])})
    return dict(result)
