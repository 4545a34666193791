"""Structured logs: JSON lines with the run id, secrets redacted.

``get_logger(name)`` returns a stdlib logger; :func:`configure` installs the JSON
formatter on stderr once. ``run_id_var`` carries the current run (or request) id into
every line logged while it is set. Extra fields go in ``extra={"fields": {...}}``.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
import traceback
from typing import Any, TextIO

from active_data_flow.redact import redact, redact_text

__all__ = ["JsonFormatter", "configure", "get_logger", "log_event", "run_id_var"]

run_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("adf_run_id", default=None)
_ROOT = "adf"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, run_id, fields…, error + backtrace."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": redact_text(record.getMessage()),
        }
        run_id = getattr(record, "run_id", None) or run_id_var.get()
        if run_id:
            out["run_id"] = run_id
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            out.update(redact(fields))
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            out["error"] = redact_text(f"{type(exc).__name__}: {exc}")
            out["backtrace"] = redact_text("".join(traceback.format_exception(*record.exc_info)))
        return json.dumps(out, default=str)


_configured = False


def configure(level: str | int = "INFO", stream: TextIO | None = None) -> None:
    """Send the ``adf`` loggers (and other libraries' warnings, when nothing else handles them)
    to ``stream`` (stderr) as JSON lines; idempotent."""
    global _configured
    logger = logging.getLogger(_ROOT)
    if isinstance(level, str):
        level = getattr(logging, level.upper(), logging.INFO)
    logger.setLevel(level)
    if not _configured:
        handler = logging.StreamHandler(stream or sys.stderr)
        handler.setFormatter(JsonFormatter())
        logger.addHandler(handler)
        logger.propagate = False
        root = logging.getLogger()
        if not root.handlers:
            # warnings of the libraries underneath (a driver's "connection lost") are JSON lines
            # too, instead of plain text in the middle of the log
            root.addHandler(handler)
            root.setLevel(logging.WARNING)
        _configured = True


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(f"{_ROOT}.{name}")


def log_event(logger: logging.Logger, msg: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log ``msg`` with structured ``fields``."""
    logger.log(level, msg, extra={"fields": fields})
