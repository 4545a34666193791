"""The handlers' Powertools ``Tracer``: no X-Ray SDK when tracing is off, lazy patching when on.

Powertools' ``Tracer`` imports ``aws_xray_sdk.core`` whenever it is created, even when tracing
is disabled, and by default patches every library the X-Ray SDK knows (``patch_all``), which
imports them all — botocore alone is most of a cold start's import time. Measured in a
``sam build`` package: ``Tracer()`` 300-340 ms with tracing on; with
``patch_modules=["botocore", "httplib"]`` 90-100 ms; without patching 36 ms.

* Tracing off (``POWERTOOLS_TRACE_DISABLED=true``, which the SAM template sets unless its
  ``Tracing`` parameter is ``Active``; also outside Lambda): :func:`make_tracer` gives the
  ``Tracer`` a provider that records nothing and imports nothing. The decorators
  (``capture_lambda_handler``, ``capture_method``) work unchanged.
* Tracing on: Powertools' own X-Ray tracer. The modules in ``ADF_TRACE_PATCH_MODULES``
  (default ``botocore,httplib``: the AWS calls and outbound HTTP the connectors make;
  ``all``: every library the X-Ray SDK can patch; empty: none) are patched *when they are
  imported* (a post-import hook, wrapt's, which the X-Ray SDK itself is built on) rather than
  imported to be patched: a function whose flow never touches AWS never loads botocore, and
  one that does gets botocore patched before its first client exists — every AWS call is
  traced either way. A module already imported is patched at once.
"""

from __future__ import annotations

import contextlib
import numbers
import os
import sys
import traceback
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any

from aws_lambda_powertools import Tracer
from aws_lambda_powertools.tracing.base import BaseProvider, BaseSegment

__all__ = [
    "DEFAULT_PATCH_MODULES", "NoOpProvider", "make_tracer", "patch_modules", "patch_on_import", "tracing_enabled",
]


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


#: the module whose import makes an X-Ray patch possible (the SDK's name -> import name)
_TRIGGERS = {
    "aiobotocore": "aiobotocore.client", "botocore": "botocore.client", "pynamodb": "pynamodb",
    "requests": "requests", "sqlite3": "sqlite3", "mysql": "mysql.connector", "httplib": "http.client",
    "pymongo": "pymongo", "pymysql": "pymysql", "psycopg2": "psycopg2", "psycopg": "psycopg",
    "pg8000": "pg8000", "sqlalchemy_core": "sqlalchemy", "httpx": "httpx",
    "boto3": "botocore.client", "aioboto3": "aiobotocore.client",
}


def patch_on_import(modules: Sequence[str]) -> dict[str, str]:
    """Have the X-Ray SDK patch each of ``modules`` (its names: ``botocore``, ``httplib``...)
    as soon as the library is imported; at once if it already is. Names the SDK does not
    know as libraries (your own modules) are handed to its ``patch`` now. Returns
    ``{name: module watched}``."""
    import wrapt
    from aws_xray_sdk.core import patch

    watched: dict[str, str] = {}
    external = [m for m in modules if m not in _TRIGGERS]
    if external:
        patch(external)
    for name in modules:
        trigger = _TRIGGERS.get(name)
        if trigger is None:
            continue

        def hook(module: Any, name: str = name) -> None:
            # the hook runs as the submodule finishes loading, a moment before the import system
            # binds it on its package; the SDK's patches reach it through the package
            package, _, child = module.__name__.rpartition(".")
            if package in sys.modules and not hasattr(sys.modules[package], child):
                setattr(sys.modules[package], child, module)
            patch([name], raise_errors=False)

        wrapt.register_post_import_hook(hook, trigger)
        watched[name] = trigger
    return watched


def make_tracer(service: str) -> Tracer:
    """Powertools' X-Ray ``Tracer`` when tracing is on (the chosen modules patched as they are
    imported), else one on :class:`NoOpProvider`."""
    if not tracing_enabled():
        return Tracer(service=service, disabled=True, auto_patch=False, provider=NoOpProvider())
    tracer = Tracer(service=service, auto_patch=False)
    modules = patch_modules()
    if modules is None:  # what Powertools' default (the SDK's patch_all) covers
        from aws_xray_sdk.core.patcher import NO_DOUBLE_PATCH

        modules = tuple(NO_DOUBLE_PATCH)
    patch_on_import(modules)
    return tracer
