"""The errors of an invocation, and how each becomes an answer: status, message, fields.

Standard library only at module level (this runs inside a Spin component).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from active_data_flow.errors import AdfError, ConfigError
from active_data_flow.ids import new_id
from active_data_flow.redact import redact_text

if TYPE_CHECKING:
    from active_data_flow.engine import RunSummary
    from active_data_flow.handlers.invoke.run import (
        Invocation,  # the HTTP types only annotate here: the event handlers never load them
    )



class InvokeError(AdfError):
    """An error with an HTTP status; ``problems`` lists details when there are several."""

    status = 500

    def __init__(self, message: str, problems: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.problems = list(problems)


class BadRequest(InvokeError):
    """Malformed input: JSON, the body's shape, a query parameter or a header (400)."""

    status = 400


class Forbidden(InvokeError):
    """The request asks for something this host does not allow (403; for custom hosts and
    error handlers: what a request may *set* is refused with 400, see :mod:`active_data_flow.handlers.invoke.params`)."""

    status = 403


class NotFound(InvokeError):
    """Unknown flow or route (404); ``flows`` lists the known flows when it is about a flow."""

    status = 404

    def __init__(self, message: str, flows: Iterable[str] | None = None) -> None:
        super().__init__(message)
        self.flows = None if flows is None else list(flows)


class MethodNotAllowed(InvokeError):
    """The route exists but not for this method (405); ``allow`` lists the methods."""

    status = 405

    def __init__(self, message: str, allow: Iterable[str]) -> None:
        super().__init__(message)
        self.allow = list(allow)


class FlowFailed(InvokeError):
    """A run ended with ``status: failed`` (raised by the handlers, never by :func:`invoke_flow`)."""

    def __init__(self, invocation: Invocation) -> None:
        summary = invocation.summary
        self.invocation = invocation
        self.out_of_memory = invocation.out_of_memory
        self.status = 507 if self.out_of_memory else 500
        super().__init__(failure_message(invocation.flow, summary))


class PublishUnsupported(AdfError):
    """The host cannot publish results (no outbound Redis / MQTT configured)."""


class PayloadTooLarge(InvokeError):
    """A request body over the transport's limit (413); nothing of it was parsed.
    ``size`` is the body's length when it is known (a ``Content-Length``), else None."""

    status = 413

    def __init__(self, limit: int, size: int | None = None) -> None:
        self.limit, self.size = limit, size
        got = f"{size} bytes" if size is not None else f"more than {limit} bytes"
        super().__init__(
            f"the request body is too large: {got}; the limit is {limit} bytes (ADF_MAX_BODY_BYTES). "
            "Send fewer records per request."
        )


def status_for(exc: BaseException) -> int:
    """The HTTP status an error maps to (also reported as ``code`` in message results)."""
    if isinstance(exc, InvokeError):
        return exc.status
    if isinstance(exc, ConfigError):
        return 422
    if isinstance(exc, MemoryError):
        return 507
    return 500


def failure_message(flow: str, summary: RunSummary) -> str:
    if summary.error_type == "MemoryError":
        return (
            f"out of memory while running flow {flow!r} ({summary.error or 'MemoryError'}); "
            "send fewer records per request or lower runtime.batch_size"
        )
    return summary.error or f"flow {flow!r} failed"


def error_message(exc: BaseException, error_id: str) -> str:
    if isinstance(exc, InvokeError):
        return exc.message
    if isinstance(exc, ConfigError):
        return redact_text(str(exc))
    if isinstance(exc, MemoryError):
        return f"out of memory while handling the request (error_id {error_id}); send a smaller request"
    return f"internal error (error_id {error_id}; details in the log)"


def error_fields(exc: BaseException) -> dict[str, Any]:
    """Extra fields of an error body/result besides ``error`` and ``error_id``."""
    if isinstance(exc, FlowFailed):
        return exc.invocation.body()
    out: dict[str, Any] = {}
    problems = getattr(exc, "problems", None)
    if isinstance(exc, InvokeError | ConfigError) and problems:
        out["problems"] = [redact_text(str(p)) for p in problems]
    if isinstance(exc, NotFound) and exc.flows is not None:
        out["flows"] = exc.flows
    if isinstance(exc, InvokeError):  # a refused request (active_data_flow.handlers.invoke.params) says what it may set
        refused, declared = getattr(exc, "refused", None), getattr(exc, "declared", None)
        if refused is not None:
            out["refused"] = list(refused)
        if declared is not None:
            out["declared_params"] = list(declared)
    return out


def new_error_id() -> str:
    return new_id(12)
