"""The module registry's logs: the execution log, the audit log and the security alerts.

:class:`RegistryLogs` is a base class of :class:`~active_data_flow.wasm.registry.ModuleRegistry`, which
opens the database (``_engine``) and declares the tables (``_t``): a registry is the executor's
``execution_log`` (:meth:`~RegistryLogs.record`) and a step's ``audit`` callback
(:meth:`~RegistryLogs.audit`), and it raises a security alert (:meth:`~RegistryLogs._alert`)
for every refused module.
"""

from __future__ import annotations

import builtins
import json
import uuid
from collections.abc import Mapping
from typing import Any

from active_data_flow.ids import utc_now_iso
from active_data_flow.logs import get_logger, log_event
from active_data_flow.redact import redact_text
from active_data_flow.wasm.registry_store import (
    Tables,
    as_float,
    as_int,
    iso_time,
    json_text,
    log_text,
    module_filter,
    parse_ref,
    sqlalchemy_module,
)

__all__ = ["RegistryLogs"]

_log = get_logger("wasm.registry")


class RegistryLogs:
    """The execution, audit and security-alert logs of a registry (the tables ``_t`` in the
    database of ``_engine``)."""

    _engine: Any
    _t: Tables

    # ----------------------------------------------------------------- security alerts

    def _alert(self, kind: str, module_id: str | None, version: str | None, message: str, **detail: Any) -> None:
        log_event(_log, f"wasm security alert: {message}", 40, kind=kind, module_id=module_id, version=version)
        try:
            with self._engine.begin() as conn:
                conn.execute(self._t.alerts.insert().values(
                    ts=utc_now_iso(), kind=kind, module_id=module_id, version=version, message=redact_text(message),
                    detail=json_text(detail)))
        except Exception as exc:  # the refusal itself must still happen
            log_event(_log, "could not record a wasm security alert", 40, kind=kind, error=str(exc))

    def security_alerts(self, *, module_id: str | None = None, limit: int | None = None) -> builtins.list[dict[str, Any]]:
        """Newest first: ``{id, ts, kind, module_id, version, message, detail}``."""
        sa = sqlalchemy_module()
        t = self._t.alerts
        stmt = sa.select(t).order_by(t.c.id.desc())
        if module_id is not None:
            mid, version = parse_ref(module_id)
            stmt = stmt.where(t.c.module_id == mid)
            if version is not None:
                stmt = stmt.where(t.c.version == version)
        if limit is not None:
            stmt = stmt.limit(limit)
        with self._engine.connect() as conn:
            rows = [dict(r) for r in conn.execute(stmt).mappings()]
        for row in rows:
            row["detail"] = json.loads(row["detail"]) if row["detail"] else {}
        return rows

    # ----------------------------------------------------------------- execution log

    _EXECUTION_KEYS = ("execution_id", "module_id", "function", "started_at", "ok", "fuel_consumed",
                       "peak_memory_bytes", "duration_ms", "error", "error_type", "limit", "trace")

    def record(self, entry: Mapping[str, Any]) -> None:
        """Append one execution (the executor's ``execution_log.record``). Missing keys get
        neutral values; keys beyond the standard ones are kept in ``extra``."""
        extra = {k: v for k, v in entry.items() if k not in self._EXECUTION_KEYS}
        limit = entry.get("limit")
        with self._engine.begin() as conn:
            conn.execute(self._t.executions.insert().values(
                execution_id=str(entry.get("execution_id") or uuid.uuid4().hex),
                module_id=str(entry.get("module_id") or ""),
                function=str(entry.get("function") or "run"),
                started_at=iso_time(entry.get("started_at")),
                ok=bool(entry.get("ok")),
                fuel_consumed=as_int(entry.get("fuel_consumed")),
                peak_memory_bytes=as_int(entry.get("peak_memory_bytes")),
                duration_ms=as_float(entry.get("duration_ms")),
                error=log_text(entry.get("error")),
                error_type=log_text(entry.get("error_type")),
                limit_kind=None if limit is None else str(limit),
                trace=log_text(entry.get("trace")),
                extra=json_text(extra) if extra else None,
            ))

    def query(self, *, execution_id: str | None = None, module_id: str | None = None,
              limit: int = 100) -> builtins.list[dict[str, Any]]:
        """Executions, newest first, as the entries :meth:`record` received. ``module_id``:
        ``id`` matches every version's executions (logged as ``id`` or ``id@version``),
        ``id@version`` only that version's."""
        sa = sqlalchemy_module()
        t = self._t.executions
        stmt = sa.select(t).order_by(t.c.started_at.desc(), t.c.id.desc()).limit(max(int(limit), 0))
        if execution_id is not None:
            stmt = stmt.where(t.c.execution_id == execution_id)
        if module_id is not None:
            stmt = stmt.where(module_filter(t.c.module_id, module_id))
        with self._engine.connect() as conn:
            rows = [dict(r) for r in conn.execute(stmt).mappings()]
        out = []
        for row in rows:
            entry: dict[str, Any] = {k: row.get(k) for k in self._EXECUTION_KEYS if k != "limit"}
            entry["ok"] = bool(row["ok"])
            entry["limit"] = row["limit_kind"]
            for k, v in (json.loads(row["extra"]) if row["extra"] else {}).items():
                entry.setdefault(k, v)
            out.append(entry)
        return out

    def stats(self, module_id: str) -> dict[str, Any]:
        """``{module_id, executions, failures, avg_fuel, max_fuel, avg_duration_ms, last_run}``
        (``id``: every version; ``id@version``: that one)."""
        sa = sqlalchemy_module()
        t = self._t.executions
        stmt = sa.select(
            sa.func.count(),
            sa.func.sum(sa.case((t.c.ok == sa.false(), 1), else_=0)),
            sa.func.avg(t.c.fuel_consumed),
            sa.func.max(t.c.fuel_consumed),
            sa.func.avg(t.c.duration_ms),
            sa.func.max(t.c.started_at),
        ).where(module_filter(t.c.module_id, module_id))
        with self._engine.connect() as conn:
            count, failures, avg_fuel, max_fuel, avg_ms, last = conn.execute(stmt).one()
        return {
            "module_id": module_id,
            "executions": int(count or 0),
            "failures": int(failures or 0),
            "avg_fuel": float(avg_fuel or 0.0),
            "max_fuel": int(max_fuel or 0),
            "avg_duration_ms": float(avg_ms or 0.0),
            "last_run": last,
        }

    # ----------------------------------------------------------------- audit log

    _AUDIT_KEYS = ("event", "module_id", "execution_id", "permission", "resource", "function", "ts")

    def audit(self, event: Mapping[str, Any]) -> None:
        """Append one audit event (``{event: "permission_denied"|"host_call"|..., module_id,
        execution_id, permission, resource, function, ts}``; other keys go to ``extra``)."""
        extra = {k: v for k, v in event.items() if k not in self._AUDIT_KEYS}

        def opt(key: str) -> str | None:
            value = event.get(key)
            return None if value is None else redact_text(str(value))

        with self._engine.begin() as conn:
            conn.execute(self._t.audit.insert().values(
                ts=iso_time(event.get("ts")), event=str(event.get("event") or "unknown"), module_id=opt("module_id"),
                execution_id=opt("execution_id"), permission=opt("permission"), resource=opt("resource"),
                function=opt("function"), extra=json_text(extra) if extra else None))

    def audit_log(self, *, module_id: str | None = None, event: str | None = None,
                  limit: int = 100) -> builtins.list[dict[str, Any]]:
        """Audit events, newest first."""
        sa = sqlalchemy_module()
        t = self._t.audit
        stmt = sa.select(t).order_by(t.c.id.desc()).limit(max(int(limit), 0))
        if module_id is not None:
            stmt = stmt.where(module_filter(t.c.module_id, module_id))
        if event is not None:
            stmt = stmt.where(t.c.event == event)
        with self._engine.connect() as conn:
            rows = [dict(r) for r in conn.execute(stmt).mappings()]
        out = []
        for row in rows:
            entry = {k: row[k] for k in self._AUDIT_KEYS}
            entry["id"] = row["id"]
            for k, v in (json.loads(row["extra"]) if row["extra"] else {}).items():
                entry.setdefault(k, v)
            out.append(entry)
        return out
