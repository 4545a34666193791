"""Where a run's dead letters go: a JSON Lines file in the run directory, or the flow's dead-letter sink."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from active_data_flow.codec import codec
from active_data_flow.context import RunContext
from active_data_flow.errors import SinkUnavailableError
from active_data_flow.ids import utc_now_iso
from active_data_flow.logs import get_logger
from active_data_flow.outcome import ReasonTally
from active_data_flow.record import DeadLetter
from active_data_flow.registry import Registry
from active_data_flow.retry import RetriesExhausted, RetryPolicy, is_unavailable, retry_call
from active_data_flow.sink import Sink

if TYPE_CHECKING:
    pass

_log = get_logger("engine")


class DeadLetterWriter:
    """Writes dead letters with the flow, run id and time.

    Default destination: ``<run dir>/dead_letters.jsonl`` (opened with ``O_APPEND``; each
    batch is one ``write`` so several readers can share the file). With a sink spec, every
    dead letter becomes a record ``{flow, run_id, ts, stage, reason, error_type, record,
    origin, step}`` written to that sink. Without a run directory (a run that may not write
    files, such as inside a WebAssembly component) the first ``KEEP`` dead letters are kept
    in ``kept`` and returned in the run summary.
    """

    KEEP = 1000

    def __init__(
        self,
        spec: Mapping[str, Any] | None,
        run_ctx: RunContext,
        run_dir: str | None,
        reg: Registry,
        retry: RetryPolicy | None = None,
        *,
        keep_all: bool = False,
    ) -> None:
        self.run_ctx = run_ctx
        self.count = 0
        #: reasons of the dead letters written by this writer (not yet reported: see :meth:`take_reasons`)
        self.reasons = ReasonTally()
        self.retry = retry or RetryPolicy()
        self.kept: list[dict[str, Any]] | None = None
        self._fd: int | None = None
        self._sink: Sink | None = None
        if spec:
            self._sink = reg.build("sink", spec, run_ctx)
            self.destination = f"sink {self._sink.describe()}"
            self.path: str | None = None
        elif run_dir is None or keep_all:
            self.kept = []
            self.path = None
            self.destination = "the run summary (dead_letter_sample)"
            if keep_all:  # every one, in memory (a replay gives them back to its caller)
                self.KEEP = sys.maxsize
                self.destination = "memory"
        else:
            self.path = os.path.join(run_dir, "dead_letters.jsonl")
            self.destination = self.path

    def setup(self) -> None:
        if self._sink is not None:
            self._sink.setup()

    def open(self) -> None:
        if self._sink is not None:
            self._sink.open()

    def write(self, letters: list[DeadLetter]) -> None:
        if not letters:
            return
        ts = utc_now_iso()
        rows = []
        for letter in letters:
            row = {"flow": self.run_ctx.flow_name, "run_id": self.run_ctx.run_id, "ts": ts}
            row.update(letter.to_dict())
            rows.append(row)
        if self._sink is not None:
            sink = self._sink

            def deliver() -> None:
                sink.write_batch(rows)
                sink.flush()

            # An unreachable dead-letter destination is an outage like any other: retried, then
            # the run fails with its checkpoint (the batch is read again), never dropped.
            try:
                retry_call(deliver, policy=self.retry, retryable=is_unavailable, what=f"dead-letter {self.destination}")
            except RetriesExhausted as exc:
                raise SinkUnavailableError(
                    f"{exc}; the run's checkpoint is kept: make the dead-letter destination reachable and run the "
                    "flow again to resume"
                ) from exc.last
        elif self.kept is not None:
            self.kept.extend(rows[: max(self.KEEP - len(self.kept), 0)])
        else:
            assert self.path is not None
            if self._fd is None:
                os.makedirs(os.path.dirname(self.path), exist_ok=True)
                self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            dumps = codec().dumps
            os.write(self._fd, b"".join(dumps(r) + b"\n" for r in rows))
        self.count += len(rows)
        for letter in letters:
            self.reasons.add(letter.reason)

    def take_reasons(self) -> dict[str, list[Any]]:
        """The reasons tallied since the last call (a reader reports them with its progress)."""
        return self.reasons.take()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._sink is not None:
            self._sink.close()
