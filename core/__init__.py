"""ActiveDataFlow: write a data flow once (source -> steps -> sink), run it anywhere.

The import package is ``active_data_flow``. Its engine lives in the repository's ``core/``
folder and imports only the standard library, so it runs inside a Spin component too; the
hosts are subpackages: ``active_data_flow.handlers`` (trigger handling, the heartbeat runtime
and its web app), ``active_data_flow.spin_app``, ``active_data_flow.lambda_app`` and
``active_data_flow.flink_job``.

The public API is importable from here::

    from active_data_flow import DataFlow, Record, Source, Sink, Step, run_flow

The names load on first use (PEP 562), so ``import active_data_flow.record`` costs no more
than that one module.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the module that defines it
_PUBLIC = {
    "DataFlow": "flow",
    "run_flow": "engine",
    "RunSummary": "engine",
    "Pipeline": "engine",
    "replay_dead_letters": "engine",
    "Record": "record",
    "Schema": "record",
    "TypedRecord": "record",
    "DeadLetter": "record",
    "Source": "source",
    "Split": "source",
    "SplitEnumerator": "source",
    "SplitEnumeratorContext": "source",
    "SourceReader": "source",
    "SourceReaderContext": "source",
    "SplitReader": "source",
    "ReaderBatch": "source",
    "ReaderStatus": "source",
    "Boundedness": "source",
    "Step": "step",
    "FunctionStep": "step",
    "Sink": "sink",
    "RunContext": "context",
    "Registry": "registry",
    "register": "registry",
    "FlowSpec": "spec",
    "parse_spec": "spec",
    "AdfError": "errors",
    "ConfigError": "errors",
    "SpecError": "errors",
}

__all__ = [
    "AdfError",
    "Boundedness",
    "ConfigError",
    "DataFlow",
    "DeadLetter",
    "FlowSpec",
    "FunctionStep",
    "Pipeline",
    "ReaderBatch",
    "ReaderStatus",
    "Record",
    "Registry",
    "RunContext",
    "RunSummary",
    "Schema",
    "Sink",
    "Source",
    "SourceReader",
    "SourceReaderContext",
    "SpecError",
    "Split",
    "SplitEnumerator",
    "SplitEnumeratorContext",
    "SplitReader",
    "Step",
    "TypedRecord",
    "__version__",
    "parse_spec",
    "register",
    "replay_dead_letters",
    "run_flow",
]

if TYPE_CHECKING:
    from active_data_flow.context import RunContext
    from active_data_flow.engine import Pipeline, RunSummary, replay_dead_letters, run_flow
    from active_data_flow.errors import AdfError, ConfigError, SpecError
    from active_data_flow.flow import DataFlow
    from active_data_flow.record import DeadLetter, Record, Schema, TypedRecord
    from active_data_flow.registry import Registry, register
    from active_data_flow.sink import Sink
    from active_data_flow.source import (
        Boundedness,
        ReaderBatch,
        ReaderStatus,
        Source,
        SourceReader,
        SourceReaderContext,
        Split,
        SplitEnumerator,
        SplitEnumeratorContext,
        SplitReader,
    )
    from active_data_flow.spec import FlowSpec, parse_spec
    from active_data_flow.step import FunctionStep, Step


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'active_data_flow' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
