"""The values the Python WASI host functions return, and how they become ``wasmtime`` values.

Host functions return plain values — :class:`Ok` / :class:`Err` for WIT results, ``None`` /
:class:`Some` for options, :class:`V` for variants, ``dict`` for records, a ``str`` for enums —
and :func:`make_lower` turns them into what the ``wasmtime`` package expects for the import's
declared type. :func:`fallback` is what a function this host does not provide answers, when
its type allows a polite refusal.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Err", "Ok", "Some", "V", "WasiTrap", "fallback", "make_lower"]


@dataclass
class Ok:
    value: Any = None


@dataclass
class Err:
    value: Any = None


@dataclass
class Some:
    value: Any


@dataclass
class V:
    """A variant case (``payload`` None for a case without one)."""

    tag: str
    payload: Any = None


class WasiTrap(Exception):
    """Raised by a host function to trap the guest (``wasi:cli/exit``, an unknown handle)."""


# --------------------------------------------------------------------------- lowering


def make_lower(wt: Any, ty: Any) -> Callable[[Any], Any]:
    """A function turning a value (this module's conventions) into what the ``wasmtime``
    package lowers as ``ty`` — worked out once per type, not per call."""
    c = wt.component
    if ty is None:
        return lambda value: None
    if isinstance(ty, c.ResultType):
        ok = make_lower(wt, ty.ok) if ty.ok is not None else (lambda v: None)
        err = make_lower(wt, ty.err) if ty.err is not None else (lambda v: None)
        if ty._tagged():
            return lambda v: c.Variant("err", err(v.value)) if isinstance(v, Err) else c.Variant(
                "ok", ok(v.value if isinstance(v, Ok) else v))
        return lambda v: err(v.value) if isinstance(v, Err) else ok(v.value if isinstance(v, Ok) else v)
    if isinstance(ty, c.OptionType):
        some = make_lower(wt, ty.payload)
        if ty._tagged():
            return lambda v: c.Variant("none") if v is None else c.Variant("some", some(
                v.value if isinstance(v, Some) else v))
        return lambda v: None if v is None else some(v.value if isinstance(v, Some) else v)
    if isinstance(ty, c.VariantType):
        cases = {name: (make_lower(wt, cty) if cty is not None else None) for name, cty in ty.cases}
        tagged = ty._tagged()

        def variant(v: V) -> Any:
            fn = cases[v.tag]
            low = fn(v.payload) if fn is not None else None
            return c.Variant(v.tag, low) if tagged else low

        return variant
    if isinstance(ty, c.RecordType):
        fields = [(name, make_lower(wt, fty)) for name, fty in ty.fields]

        def record(v: Mapping[str, Any]) -> Any:
            rec = c.Record()
            for name, fn in fields:
                setattr(rec, name, fn(v[name]))
            return rec

        return record
    if isinstance(ty, c.TupleType):
        elements = [make_lower(wt, t) for t in ty.elements]
        return lambda v: tuple(fn(x) for fn, x in zip(elements, v, strict=True))
    if isinstance(ty, c.ListType):
        if ty._is_bytes():
            return bytes
        element = make_lower(wt, ty.element)
        return lambda v: [element(x) for x in v]
    if isinstance(ty, c.FlagsType):
        return set
    return lambda v: v  # primitives, enums (str), strings, resources (ResourceHost)


def fallback(wt: Any, result: Any) -> Any:
    """What an unprovided function answers, when its type allows a polite refusal: an error
    code (``unsupported``, ``not-supported``, ``access-denied``...) of a result. None: trap."""
    c = wt.component
    if not isinstance(result, c.ResultType) or result.err is None:
        return None
    err = result.err
    if isinstance(err, c.EnumType):
        names = err.names
        for choice in ("unsupported", "not-supported", "access-denied", "access", "not-permitted"):
            if choice in names:
                return Err(choice)
    if isinstance(err, c.VariantType):
        cases = dict(err.cases)
        for choice in ("internal-error", "unsupported", "not-supported"):
            if choice in cases:
                return Err(V(choice))  # internal-error(option<string>): none
    return None
