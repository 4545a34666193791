"""A runtime plugin for the tests: reads the source and runs the steps, writes nothing."""

from __future__ import annotations

from typing import Any

from active_data_flow.engine import RunSummary
from active_data_flow.registry import registry
from active_data_flow.runtime import Runtime
from active_data_flow.spec import FlowSpec
from active_data_flow.step import build_steps


class DryRun(Runtime):
    type_name = "dry"

    def run(self, spec: FlowSpec, **options: Any) -> RunSummary:
        source = registry.resolve("source", spec.source["type"])({k: v for k, v in spec.source.items() if k != "type"})
        records = list(source.each())
        failed: list[Any] = []
        for step in build_steps(spec.steps, registry.resolve):
            records = step.process_batch(records, lambda r, e, s: failed.append(r))
        return RunSummary(flow=spec.name, run_id="dry", status="success", records_in=len(records) + len(failed),
                          records_out=len(records), dead_letters=len(failed), sink="(dry run: nothing written)")
