"""Runtimes: where and how a flow runs.

A flow's ``runtime.type`` names a registered :class:`Runtime` (``local`` is built in; the
heartbeat, Lambda, Spin and Flink targets register theirs, and other packages can add more
through the ``active_data_flow.runtimes`` entry-point group). Several runtimes can be used
in one application: each flow names its own.

Example::

    @register("runtime", "dry_run")
    class DryRun(Runtime):
        def run(self, spec, **options):
            ...  # validate, plan, report — and return a RunSummary
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from active_data_flow.attributes import Configurable

if TYPE_CHECKING:
    from active_data_flow.engine import RunSummary
    from active_data_flow.spec import FlowSpec

__all__ = ["LocalRuntime", "Runtime", "run"]


class Runtime(Configurable, abc.ABC):
    """Runs a validated flow and returns its summary.

    ``options`` are those of :func:`active_data_flow.engine.run_flow` (``state_dir``, ``resume``,
    ``on_progress``, ``store``, ``run_id``); a runtime ignores the ones it has no use for.
    A failing flow is reported in the summary (``status="failed"``), not raised.
    """

    @classmethod
    def _kind(cls) -> str:
        return "runtime"

    @abc.abstractmethod
    def run(self, spec: FlowSpec, **options: Any) -> RunSummary: ...


class LocalRuntime(Runtime):
    """The ``local`` runtime: this process plus ``runtime.parallelism`` reader processes."""

    type_name = "local"

    def run(self, spec: FlowSpec, **options: Any) -> RunSummary:
        from active_data_flow.engine import run_flow

        return run_flow(spec, **options)


def run(spec: FlowSpec, runtime_config: Mapping[str, Any] | None = None, **options: Any) -> RunSummary:
    """Run ``spec`` on the runtime its ``runtime.type`` names."""
    from active_data_flow.registry import registry

    cls = registry.resolve("runtime", spec.runtime.get("type") or "local")
    runtime: Runtime = cls(runtime_config or {})
    return runtime.run(spec, **options)
