"""The ``wasm`` flow step: records through a sandboxed WebAssembly module.

::

    steps:
      - {type: wasm, module: pricing@1.2.0, function: run, fuel: 5000000, timeout_ms: 500, memory_mb: 32}

What the module gets (one call per batch of ``batch_size`` records; ``batch: false`` calls it
once per record) and what it answers — the envelope, JSON in and out (docs/WASM_ABI.md)::

    in:  {"records": [{...}, ...], "context": {...}, "config": {...}}
    out: {"records": [{...} | null, ...],               # one per input record; null drops it
          "errors":  [{"index": 0, "error": "..."}],     # optional: records that fail validation
          "next":    [["big"], null, [], ...],           # optional: routing, one per record
          "context": {...}}                              # optional: merged into the run context

* ``output: replace`` (default) passes the module's record on; ``merge`` updates the input
  record with it.
* ``errors``: with ``on_invalid: dead_letter`` (default) those records go to the dead-letter
  destination with the module's reason; with ``fail`` the run fails.
* ``next``: per record, the ids of the later steps it goes to (one, several — a copy each —
  or ``[]``: done, straight to the sink); ``null`` or no ``next`` continues with the next
  step. An id that is not a later step fails that record with a clear message.
* ``config`` is sent to the module with ``${context.x}`` references resolved first;
  ``context`` is the run context (the spec's ``context:`` plus what steps set).
* A call that fails (a limit, a trap) is retried ``retries`` times; if a batch still fails,
  each record is tried alone so only the records the module fails on are dead-lettered,
  each with the error (the limit that was hit and the fuel consumed).

``module`` is ``id@version`` (or ``id``: the newest) in the module registry
(``ADF_WASM_DB_URL`` / ``ADF_WASM_STORAGE``), whose permissions apply; or a path to a
``.wasm``/``.wat`` file for development, whose permissions are the step's ``allow`` list.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from active_data_flow.attributes import Attribute
from active_data_flow.errors import AdfError, ConfigError
from active_data_flow.record import Record
from active_data_flow.refs import resolve
from active_data_flow.retry import RetriesExhausted, RetryPolicy, retry_call
from active_data_flow.step import ErrorHandler, Routed, Step
from active_data_flow.wasm.errors import WasmAbiError, WasmError, WasmPermissionDenied
from active_data_flow.wasm.limits import Limits
from active_data_flow.wasm.permissions import PermissionSet

__all__ = ["WasmRecordInvalid", "WasmStep"]

_REF_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]*(@(latest|\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?))?$")
_NOT_RETRIED = (WasmAbiError, WasmPermissionDenied)


def _quiet(exc: BaseException, attempt: int, wait: float) -> None:
    """A module's failed call is reported with the record's dead letter, not once per attempt."""


class WasmRecordInvalid(AdfError, ValueError):
    """The module reported the record as invalid (its ``errors`` entry)."""


def _positive(v: Any) -> str | None:
    return None if v is None or (isinstance(v, int) and v > 0) else "must be a positive integer"


def is_module_file(ref: str) -> bool:
    return ref.endswith((".wasm", ".wat")) or os.sep in ref or "/" in ref


class WasmStep(Step):
    """Calls a WebAssembly module on batches of records (see the module doc)."""

    type_name = "wasm"
    attributes = (
        Attribute("module", str, required=True, help="'id@version' in the module registry, or a .wasm/.wat file"),
        Attribute("function", str, default="run", help="the exported function to call"),
        Attribute("fuel", int, check=_positive, help="instructions per call (wasmtime fuel)"),
        Attribute("memory_mb", int, check=_positive, help="linear memory limit"),
        Attribute("timeout_ms", int, check=_positive, help="wall-clock limit per call"),
        Attribute("max_output_bytes", int, check=_positive, help="largest answer accepted"),
        Attribute("batch", bool, default=True, help="one call per batch of records (false: one per record)"),
        Attribute("batch_size", int, default=500, check=_positive),
        Attribute("output", str, default="replace", choices=("replace", "merge")),
        Attribute("on_invalid", str, default="dead_letter", choices=("dead_letter", "fail"),
                  help="what a record the module reports in 'errors' does"),
        Attribute("config", dict, default=None, help="sent to the module; ${context.x} resolved first"),
        Attribute("allow", list, default=None,
                  help="permissions of a module given as a file (registry modules use the registry's)"),
        Attribute("databases", dict, default=None, secret=True, help="connection name → URL for db_query"),
        Attribute("files", str, default=None, help="storage for file_read/file_write (directory or s3:// URL)"),
        Attribute("retries", int, default=0, help="retries of a failed call"),
        Attribute("name", str),
    )

    def __init__(self, config: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        ref = str(self.option("module"))
        where = f"step {self.option('name') or 'wasm'!r}"
        problems = []
        self.from_file = is_module_file(ref)
        if not self.from_file and not _REF_RE.match(ref):
            problems.append(f"module {ref!r} is neither 'id@version' (e.g. pricing@1.2.0) nor a .wasm/.wat file")
        if self.from_file and not os.path.isfile(ref):
            problems.append(f"module file {ref!r} does not exist")
        try:
            self.allow = PermissionSet.parse(self.option("allow") or [])
        except ValueError as exc:
            problems.append(f"allow: {exc}")
            self.allow = PermissionSet()
        if self.allow and not self.from_file:
            problems.append("allow: a registry module's permissions are the registry's (adf wasm permissions); "
                            "'allow' applies to module files only")
        try:
            self.limits = Limits.from_mapping({k: self.option(k) for k in ("fuel", "memory_mb", "timeout_ms",
                                                                          "max_output_bytes")})
        except ConfigError as exc:
            problems.extend(exc.problems)
        if problems:
            raise ConfigError(where, problems)
        if not self.from_file:
            self._check_registered(ref, where)
        self.ref = ref
        self.name = self.option("name") or f"wasm:{ref}"
        self.can_route = True
        self._executor: Any = None
        self._compiled: Any = None

    @staticmethod
    def _check_registered(ref: str, where: str) -> None:
        """The module must exist when the flow is saved (not only when it first runs)."""
        from active_data_flow.wasm.registry import ModuleRegistry

        try:
            ModuleRegistry.from_env().get(ref)
        except LookupError as exc:
            raise ConfigError(where, [f"module {ref!r}: {exc}"]) from exc
        except ImportError as exc:
            raise ConfigError(where, [f"the module registry needs its extra: {exc}"]) from exc

    # -- running -----------------------------------------------------------------------------

    def open(self) -> None:
        from active_data_flow.wasm.executor import WasmExecutor

        if self.from_file:
            self._executor = WasmExecutor(default_limits=self.limits)
        else:
            from active_data_flow.wasm.registry import ModuleRegistry

            registry = ModuleRegistry.from_env()
            self._executor = WasmExecutor(registry=registry, execution_log=registry, default_limits=self.limits)
        self._compiled = self._executor.load(self.ref)

    def _host(self, context: dict[str, Any]) -> Any:
        from active_data_flow.wasm.executor import HostContext
        from active_data_flow.wasm.storage import open_storage

        files = self.option("files")
        audit = getattr(self._executor, "registry", None)
        return HostContext(
            module_id=self._compiled.module_id,
            permissions=self.allow if self.from_file else self._compiled.permissions,
            context=context,
            databases=dict(self.option("databases") or {}),
            files=open_storage(files) if files else None,
            audit=getattr(audit, "audit", None),
        )

    def _context(self) -> dict[str, Any]:
        extras = getattr(self.run_context, "extras", None)
        if extras is None:
            return {}
        ctx: dict[str, Any] = extras.setdefault("context", {})
        return ctx

    def process_batch(self, records: list[Record], on_error: ErrorHandler) -> list[Any]:
        if self._executor is None:
            self.open()
        context = self._context()
        size = int(self.option("batch_size")) if self.option("batch") else 1
        out: list[Any] = []
        for start in range(0, len(records), size):
            chunk = records[start : start + size]
            try:
                config = resolve(self.option("config") or {}, context)
            except KeyError as exc:
                for record in chunk:
                    on_error(record, ConfigError(self.name, [str(exc)]), self.name)
                continue
            answer = self._call_chunk(chunk, context, config, on_error)
            if answer is not None:
                out.extend(self._apply(chunk, answer, context, on_error))
        return out

    def _call(self, chunk: list[Record], context: dict[str, Any], config: Any) -> Any:
        envelope = {"records": chunk, "context": context, "config": config}

        def attempt() -> Any:
            return self._executor.call(self._compiled, envelope, function=self.option("function"),
                                       limits=self.limits, host=self._host(context)).output

        # a trap or a limit may not happen again (another instance, less contention): retried at once
        policy = RetryPolicy(window_s=float("inf"), first_delay_s=0.0, jitter=0.0,
                             max_attempts=max(0, int(self.option("retries") or 0)) + 1)
        try:
            return retry_call(attempt, policy=policy, what=f"step {self.name!r}", on_retry=_quiet,
                              retryable=lambda exc: isinstance(exc, WasmError) and not isinstance(exc, _NOT_RETRIED))
        except RetriesExhausted as exc:
            raise exc.last from None

    def _call_chunk(self, chunk: list[Record], context: dict[str, Any], config: Any,
                    on_error: ErrorHandler) -> list[tuple[Record, Any]] | None:
        """[(input record, (record answer, error, next))] for the records that got an answer."""
        try:
            return self._answers(chunk, self._call(chunk, context, config))
        except WasmError as exc:
            if len(chunk) == 1:
                on_error(chunk[0], exc, self.name)
                return None
            pairs: list[tuple[Record, Any]] = []
            for record in chunk:  # isolate the records the module fails on
                try:
                    pairs.extend(self._answers([record], self._call([record], context, config)))
                except WasmError as one:
                    on_error(record, one, self.name)
            return pairs

    def _answers(self, chunk: list[Record], output: Any) -> list[tuple[Record, Any]]:
        if not isinstance(output, Mapping) or not isinstance(output.get("records"), list):
            raise WasmAbiError(f"module {self.ref!r} answered {type(output).__name__}, not "
                               '{"records": [...], ...} (see docs/WASM_ABI.md)')
        answered = output["records"]
        if len(answered) != len(chunk):
            raise WasmAbiError(f"module {self.ref!r} answered {len(answered)} records for {len(chunk)}")
        errors: dict[int, str] = {}
        for item in output.get("errors") or []:
            if not isinstance(item, Mapping) or not isinstance(item.get("index"), int) \
                    or not 0 <= item["index"] < len(chunk):
                raise WasmAbiError(f"module {self.ref!r}: bad 'errors' entry {item!r} "
                                   '(want {"index": <record index>, "error": "reason"})')
            errors[item["index"]] = str(item.get("error") or "invalid")
        nexts = output.get("next")
        if nexts is not None and (not isinstance(nexts, list) or len(nexts) != len(chunk)):
            raise WasmAbiError(f"module {self.ref!r}: 'next' must be a list with one entry per record")
        updates = output.get("context")
        if updates is not None:
            if not isinstance(updates, Mapping):
                raise WasmAbiError(f"module {self.ref!r}: 'context' must be an object")
            self._context().update(updates)
        return [(record, (answered[i], errors.get(i), None if nexts is None else nexts[i]))
                for i, record in enumerate(chunk)]

    def _apply(self, chunk: list[Record], pairs: list[tuple[Record, Any]], context: dict[str, Any],
               on_error: ErrorHandler) -> list[Any]:
        out: list[Any] = []
        merge = self.option("output") == "merge"
        for record, (answer, error, nxt) in pairs:
            if error is not None:
                invalid = WasmRecordInvalid(f"module {self.ref!r}: {error}")
                if self.option("on_invalid") == "fail":
                    raise invalid
                on_error(record, invalid, self.name)
                continue
            if answer is None:
                continue
            if not isinstance(answer, Mapping):
                on_error(record, WasmAbiError(f"module {self.ref!r} answered {answer!r} for a record "
                                              "(want an object or null)"), self.name)
                continue
            new = {**record, **answer} if merge else dict(answer)
            if nxt is None:
                out.append(new)
            elif isinstance(nxt, list) and all(isinstance(t, str) for t in nxt):
                out.append(Routed(new, tuple(nxt)))
            else:
                on_error(record, AdfError(f"invalid routing decision {nxt!r} from module {self.ref!r}: "
                                          "'next' entries are lists of step ids (or null)"), self.name)
        return out

    def close(self) -> None:
        self._executor = None
        self._compiled = None
