"""Faster Python host calls with the ``wasmtime`` package, keeping what they do.

Both functions patch the package once per process, and only after checking that it has the
internals they expect; otherwise they change nothing and return False.
"""

from __future__ import annotations

from typing import Any

__all__ = ["fast_byte_lists", "fast_host_calls"]

_FAST_BYTES = False


def fast_byte_lists(wt: Any, sample: Any) -> bool:
    """Convert ``list<u8>`` values between Python ``bytes`` and the C API in one copy.

    The ``wasmtime`` package converts a list element by element, in Python: ~1 µs a byte,
    which for request bodies, responses and log lines was most of a request's time. This
    replaces its ``ListType`` conversions for byte lists with a strided copy into (and out
    of) the C array of ``wasmtime_component_val_t``, checked once on ``sample`` (a
    ``list<u8>`` type) against the original conversion; if the check fails, nothing changes.
    """
    global _FAST_BYTES
    if _FAST_BYTES:
        return True
    import ctypes

    from wasmtime import _ffi as ffi

    LT = wt.component.ListType
    orig_to, orig_from = LT.convert_to_c, LT.convert_from_c
    T = ffi.wasmtime_component_val_t
    size, off = ctypes.sizeof(T), T.of.offset
    kind_u8, kind_list = ffi.WASMTIME_COMPONENT_U8.value, ffi.WASMTIME_COMPONENT_LIST
    def is_bytes(self: Any) -> bool:
        return bool(self._is_bytes())

    def to_c(self: Any, store: Any, val: Any, ptr: Any) -> None:
        if not isinstance(val, bytes | bytearray) or not is_bytes(self):
            return orig_to(self, store, val, ptr)  # type: ignore[no-any-return]
        n = len(val)
        raw = ffi.wasmtime_component_vallist_t()
        ffi.wasmtime_component_vallist_new_uninit(raw, n)
        if n:
            buf = bytearray(n * size)
            buf[0::size] = bytes((kind_u8,)) * n
            buf[off::size] = val
            ctypes.memmove(raw.data, bytes(buf), n * size)
        ptr.contents.kind = kind_list
        ptr.contents.of.list = raw
        return None

    def from_c(self: Any, cval: Any) -> Any:
        if not is_bytes(self):
            return orig_from(self, cval)
        lst = cval.of.list
        n = int(lst.size)
        data = ctypes.string_at(lst.data, n * size)[off::size] if n else b""
        ffi.wasmtime_component_vallist_delete(ctypes.byref(cval.of.list))
        return data

    probe = bytes(range(256)) * 3
    try:
        if not sample._is_bytes():
            return False
        a, b = T(), T()
        to_c(sample, None, probe, ctypes.pointer(a))  # fast in, the package's own way out
        fast_in = orig_from(sample, a)
        orig_to(sample, None, probe, ctypes.pointer(b))  # the package's way in, fast out
        fast_out = from_c(sample, b)
    except Exception:
        return False
    if fast_in != probe or fast_out != probe:
        return False
    LT.convert_to_c, LT.convert_from_c = to_c, from_c
    _FAST_BYTES = True
    return True



_FAST_CALLS = False

#: the properties describing a type that never change once the type is made
_MEMO_PROPERTIES = (("VariantType", ("cases",)), ("ResultType", ("ok", "err")), ("OptionType", ("payload",)),
                    ("RecordType", ("fields",)), ("TupleType", ("elements",)), ("ListType", ("element",)),
                    ("EnumType", ("names",)), ("FlagsType", ("names",)))


def _memo_property(cls: type, name: str) -> None:
    """``cls.name`` (a property) computed once per object, then remembered on it."""
    prop = cls.__dict__.get(name)
    if not isinstance(prop, property) or prop.fget is None:
        return
    fget, key = prop.fget, f"_adf_{name}"

    def get(self: Any) -> Any:
        d = self.__dict__
        if key not in d:
            d[key] = fget(self)
        return d[key]

    setattr(cls, name, property(get, doc=prop.__doc__))


def _memo_method(cls: type, name: str) -> None:
    """``cls.name()`` (a method without arguments) computed once per object, then remembered on it."""
    fn = cls.__dict__.get(name)
    if not callable(fn):
        return
    key = f"_adf_{name}"

    def call(self: Any) -> Any:
        d = self.__dict__
        if key not in d:
            d[key] = fn(self)
        return d[key]

    setattr(cls, name, call)


def _dispatcher(ffi: Any, functions: Any, func_type: Any, catch_exceptions: Any) -> Any:
    """The C callback that dispatches host calls, keeping each function's parameter and
    result types after its first call."""
    known: dict[int, tuple[Any, list[Any], Any]] = {}

    @ffi.wasmtime_component_func_callback_t
    def func_impl(idx, context, ty_raw, args, nargs, results, nresults):  # type: ignore[no-untyped-def]
        def run(store: Any) -> None:
            key = idx or 0
            func = functions.get(key)
            entry = known.get(key)
            if entry is None or entry[0] is not func:
                fty = func_type._from_ptr(ty_raw, owner=store)
                entry = known[key] = (func, [t for _, t in fty.params], fty.result)
            _, params, result_ty = entry
            result = func(store, *[ty.convert_from_c(args[i]) for i, ty in enumerate(params)])
            if result_ty is not None:
                result_ty.convert_to_c(store, result, results)
        return catch_exceptions(context, run)

    return func_impl


def fast_host_calls(wt: Any) -> bool:
    """Make the ``wasmtime`` package's Python host calls cheaper, keeping what they do.

    For every call of a Python host function the package rebuilds the function's type from
    the C API (a dozen ctypes calls per parameter) and, to lower a result, works out again
    which variant case a value belongs to. A type never changes, so here (1) the properties
    that describe a type (``cases``, ``ok``/``err``, ``payload``, ``fields``, ``elements``,
    ``element``, ``names``) and the ``_tagged`` / ``_is_bytes`` tests are remembered on the
    type object, and (2) the callback that dispatches host calls keeps each function's
    parameter and result types after its first call. Measured: a request's ~50 host calls
    went from ~8 ms of Python to ~2 ms. Only when the package has the expected internals.
    """
    global _FAST_CALLS
    if _FAST_CALLS:
        return True
    try:
        from wasmtime import _ffi as ffi
        from wasmtime.component import _linker, _types
        from wasmtime.component._enter import catch_exceptions
    except ImportError:
        return False

    for cls_name, names in _MEMO_PROPERTIES:
        cls = getattr(_types, cls_name, None)
        if cls is None:
            return False
        for name in names:
            _memo_property(cls, name)
    _memo_method(_types.VariantLikeType, "_tagged")
    _memo_method(_types.ListType, "_is_bytes")

    # add_func hands this callback to the C API from now on
    _linker.func_impl = _dispatcher(ffi, _linker.FUNCTIONS, _types.FuncType, catch_exceptions)
    _FAST_CALLS = True
    return True
