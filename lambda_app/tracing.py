"""The handlers' Powertools ``Tracer``, without the X-Ray SDK when tracing is off.

Powertools' ``Tracer`` imports ``aws_xray_sdk.core`` (and through it botocore) whenever it is
created, even when tracing is disabled, and by default patches every library the X-Ray SDK
knows (``patch_all``: botocore, requests, httplib, sqlite3, the database drivers...), which
imports them all. Measured in a ``sam build`` package: ``Tracer()`` 300-340 ms with tracing
on; with ``patch_modules=["botocore", "httplib"]`` 90-100 ms; without patching 36 ms.

* Tracing off (``POWERTOOLS_TRACE_DISABLED=true``, which the SAM template sets unless its
  ``Tracing`` parameter is ``Active``; also outside Lambda): :func:`make_tracer` gives the
  ``Tracer`` a provider that records nothing and imports nothing. The decorators
  (``capture_lambda_handler``, ``capture_method``) work unchanged.
* Tracing on: Powertools' own X-Ray tracer, patching the modules in
  ``ADF_TRACE_PATCH_MODULES`` (default ``botocore,httplib``: the AWS calls and outbound
  HTTP the connectors make; ``all``: Powertools' default ``patch_all``; empty: none).
"""

from __future__ import annotations

import contextlib
import numbers
import os
import traceback
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any

from aws_lambda_powertools import Tracer
from aws_lambda_powertools.tracing.base import BaseProvider, BaseSegment

__all__ = ["DEFAULT_PATCH_MODULES", "NoOpProvider", "make_tracer", "patch_modules", "tracing_enabled"]


class _NoOpSegment(BaseSegment):
    def close(self, end_time: int | None = None) -> None:
        pass

    def add_subsegment(self, subsegment: Any) -> None:
        pass

    def remove_subsegment(self, subsegment: Any) -> None:
        pass

    def put_annotation(self, key: str, value: str | numbers.Number | bool) -> None:
        pass

    def put_metadata(self, key: str, value: Any, namespace: str = "default") -> None:
        pass

    def add_exception(self, exception: BaseException, stack: list[traceback.StackSummary], remote: bool = False) -> None:
        pass


class NoOpProvider(BaseProvider):
    """A tracing provider that records nothing (what a disabled X-Ray recorder does, without
    loading it)."""

    @contextlib.contextmanager
    def in_subsegment(self, name: str | None = None, **kwargs: Any) -> Iterator[BaseSegment]:
        yield _NoOpSegment()

    @contextlib.asynccontextmanager
    async def in_subsegment_async(self, name: str | None = None, **kwargs: Any) -> AsyncIterator[BaseSegment]:
        yield _NoOpSegment()

    def put_annotation(self, key: str, value: str | numbers.Number | bool) -> None:
        pass

    def put_metadata(self, key: str, value: Any, namespace: str = "default") -> None:
        pass

    def patch(self, modules: Sequence[str]) -> None:
        pass

    def patch_all(self) -> None:
        pass


def tracing_enabled() -> bool:
    """Powertools' own rule: off when ``POWERTOOLS_TRACE_DISABLED`` is true, outside Lambda
    (no ``LAMBDA_TASK_ROOT``) and under ``sam local`` or Chalice."""
    return not Tracer._is_tracer_disabled()


DEFAULT_PATCH_MODULES = ("botocore", "httplib")


def patch_modules(environ: Mapping[str, str] | None = None) -> tuple[str, ...] | None:
    """The modules X-Ray patches (``ADF_TRACE_PATCH_MODULES``); None means all it supports."""
    env = os.environ if environ is None else environ
    raw = env.get("ADF_TRACE_PATCH_MODULES")
    if raw is None:
        return DEFAULT_PATCH_MODULES
    if raw.strip().lower() == "all":
        return None
    return tuple(m.strip() for m in raw.split(",") if m.strip())


def make_tracer(service: str) -> Tracer:
    """Powertools' X-Ray ``Tracer`` when tracing is on, else one on :class:`NoOpProvider`."""
    if not tracing_enabled():
        return Tracer(service=service, disabled=True, auto_patch=False, provider=NoOpProvider())
    modules = patch_modules()
    if modules is None:
        return Tracer(service=service)
    if not modules:
        return Tracer(service=service, auto_patch=False)
    return Tracer(service=service, patch_modules=list(modules))
