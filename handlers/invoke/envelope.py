"""The request envelope: the id, the clock, the errors and the one JSON log line of each request.

Every trigger — an HTTP request (:mod:`active_data_flow.handlers.invoke.http`), a Redis or MQTT message
(:mod:`active_data_flow.handlers.invoke.messages`), an S3 or SQS event (:mod:`active_data_flow.handlers.invoke.events`), a cron
tick (:mod:`active_data_flow.handlers.invoke.cron`) — opens one :class:`Envelope`, answers its errors through
:meth:`Envelope.error` and writes its one log line through :meth:`Envelope.log`, so every answer
and every line carries the same ``request_id``, ``trigger``, ``duration_ms`` and, where the host
can tell, ``memory_bytes``.

Standard library only at module level (this runs inside a Spin component).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from active_data_flow.handlers.invoke.errors import error_fields, error_message, new_error_id
from active_data_flow.handlers.invoke.host import host_memory
from active_data_flow.ids import new_id
from active_data_flow.logs import get_logger

if TYPE_CHECKING:
    from active_data_flow.handlers.invoke.host import FlowHost
    from active_data_flow.handlers.invoke.run import Invocation

__all__ = ["Envelope", "level_for", "log_line", "summary_fields"]

_log = get_logger("invoke")


class Envelope:
    """One request, message, event or tick: its id, its clock, its errors, its log line."""

    def __init__(self, trigger: str, host: FlowHost | None = None, request_id: str | None = None) -> None:
        self.trigger = trigger
        self.host = host
        self.request_id = request_id or new_id()
        self.started = time.perf_counter()

    def elapsed_ms(self) -> float:
        """Milliseconds since the envelope was opened."""
        return round((time.perf_counter() - self.started) * 1000, 3)

    def error(self, exc: BaseException, *, error_id: str | None = None,
              keys: Iterable[str] | None = None) -> dict[str, Any]:
        """The answer's fields for ``exc``: ``error`` (a message safe to show: an unexpected error
        is only named by its id, its details go to the log), ``error_id`` (new unless given) and
        the error's own fields (``problems``, ``flows``, ``refused``, ``declared_params``, or a
        failed run's summary) — only those in ``keys`` when given."""
        error_id = error_id or new_error_id()
        fields = error_fields(exc)
        if keys is not None:
            wanted = set(keys)
            fields = {k: v for k, v in fields.items() if k in wanted}
        return {"error": fields.pop("error", None) or error_message(exc, error_id), "error_id": error_id, **fields}

    def log(self, level: int, msg: str, fields: Mapping[str, Any], exc: BaseException | None = None, *,
            memory: bool = True) -> None:
        """The request's log line: ``request_id``, ``trigger``, ``fields``, then ``duration_ms``
        (unless ``fields`` has it) and ``memory_bytes`` (with ``memory``, when the host tells).
        ``exc`` adds its backtrace (for what the handler did not expect)."""
        line: dict[str, Any] = {"request_id": self.request_id, "trigger": self.trigger, **fields}
        line.setdefault("duration_ms", self.elapsed_ms())
        if memory and self.host is not None:
            line.setdefault("memory_bytes", host_memory(self.host))
        log_line(level, msg, line, exc)


def log_line(level: int, msg: str, fields: Mapping[str, Any], exc: BaseException | None = None) -> None:
    """One JSON line on the ``adf.invoke`` logger; fields that are None are left out."""
    exc_info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    _log.log(level, msg, exc_info=exc_info, extra={"fields": {k: v for k, v in fields.items() if v is not None}})


def level_for(status: int) -> int:
    """The log level of an answer with HTTP status ``status``."""
    return logging.INFO if status < 400 else logging.WARNING if status < 500 else logging.ERROR


def summary_fields(inv: Invocation) -> dict[str, Any]:
    """A run's summary as log fields (with its error and backtrace when it failed)."""
    s = inv.summary
    fields: dict[str, Any] = {
        "run_id": s.run_id,
        "run_status": s.status,
        "records_in": s.records_in,
        "records_out": s.records_out,
        "dead_letters": s.dead_letters,
    }
    if not s.ok:
        fields.update(error=s.error, error_type=s.error_type, backtrace=s.backtrace)
    return fields
