"""WASI 0.2 and ``wasi:http`` for the wasmtime host, written with Python host functions.

The PyPI ``wasmtime`` package's WASI (``Linker.add_wasip2`` / ``add_wasi_http``) is the
runtime's own, in native code, and offers no way to hand a component an *incoming* HTTP
request: the ``incoming-request`` and ``response-outparam`` resources the export
``wasi:http/incoming-handler#handle`` takes can only be made inside it. This module defines
the WASI interfaces a component imports — ``wasi:io``, ``wasi:cli``, ``wasi:clocks``,
``wasi:random``, ``wasi:filesystem`` (read-only, the preopened directories) and ``wasi:http``
(incoming and outgoing) — as Python host functions over Python objects, so that
:class:`spin_app.host.ComponentHost` can serve HTTP with a fresh instance per request, as
Spin does, on the same engine Spin uses.

Conventions: the host functions return plain values — :class:`Ok` / :class:`Err` for WIT
results, ``None`` / :class:`Some` for options, :class:`V` for variants, ``dict`` for records,
a ``str`` for enums — and :func:`make_lower` turns them into what the ``wasmtime`` package
expects for the import's declared type. Resources are Python objects in one table per instance
(:class:`WasiState`); a handle is ``ResourceHost.own(rep, type id)``. Sockets are not
provided (their calls answer ``not-supported`` / ``access-denied``), as in a Spin component.
"""

from __future__ import annotations

import os
import secrets
import stat as stat_mod
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Err", "IncomingRequest", "Ok", "OutgoingResponse", "PythonWasi", "Some", "V", "WasiState", "WasiTrap",
    "fast_byte_lists", "fast_host_calls", "make_lower",
]


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


def fast_host_calls(wt: Any) -> bool:  # noqa: C901
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

    def memo_property(cls: type, name: str) -> None:
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

    def memo_method(cls: type, name: str) -> None:
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

    for cls_name, names in (("VariantType", ("cases",)), ("ResultType", ("ok", "err")), ("OptionType", ("payload",)),
                            ("RecordType", ("fields",)), ("TupleType", ("elements",)), ("ListType", ("element",)),
                            ("EnumType", ("names",)), ("FlagsType", ("names",))):
        cls = getattr(_types, cls_name, None)
        if cls is None:
            return False
        for name in names:
            memo_property(cls, name)
    memo_method(_types.VariantLikeType, "_tagged")
    memo_method(_types.ListType, "_is_bytes")

    functions, func_type = _linker.FUNCTIONS, _types.FuncType
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

    _linker.func_impl = func_impl  # add_func hands this callback to the C API from now on
    _FAST_CALLS = True
    return True


# --------------------------------------------------------------------------- objects


class Pollable:
    def __init__(self, ready: Callable[[], bool] = lambda: True, wait: Callable[[], None] | None = None) -> None:
        self.ready = ready
        self.wait = wait

    def block(self) -> None:
        if self.ready():
            return
        if self.wait is None:  # nothing here can make it ready: waiting would hang the host
            raise WasiTrap("the component waits for something that cannot happen (e.g. a response "
                           "to an outgoing request whose body it has not finished)")
        self.wait()


class IoError:
    def __init__(self, message: str) -> None:
        self.message = message


class InputStream:
    """Bytes from a buffer, a file or a producer (``read(n) -> bytes``, b"" at the end)."""

    def __init__(self, data: bytes = b"", reader: Callable[[int], bytes] | None = None,
                 on_close: Callable[[], None] | None = None) -> None:
        self._data = memoryview(data)
        self._pos = 0
        self._reader = reader
        self._on_close = on_close
        self.closed = False

    def read(self, n: int) -> bytes:
        if self._reader is not None:
            chunk = self._reader(n)
        else:
            chunk = bytes(self._data[self._pos : self._pos + n])
            self._pos += len(chunk)
        if not chunk:
            self.closed = True
        return chunk


class OutputStream:
    def __init__(self, write: Callable[[bytes], None], flush: Callable[[], None] | None = None) -> None:
        self._write = write
        self._flush = flush
        self.closed = False

    def write(self, data: bytes) -> None:
        if data:
            self._write(data)

    def flush(self) -> None:
        if self._flush is not None:
            self._flush()


class Fields:
    def __init__(self, entries: Iterable[tuple[str, bytes]] = (), immutable: bool = False) -> None:
        self.entries: list[tuple[str, bytes]] = [(k.lower(), bytes(v)) for k, v in entries]
        self.immutable = immutable

    def get(self, name: str) -> list[bytes]:
        key = name.lower()
        return [v for k, v in self.entries if k == key]


_FORBIDDEN_HEADER = ("connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "host")


def _header_problem(name: str, immutable: bool) -> V | None:
    if immutable:
        return V("immutable")
    if not name or any(c in name for c in " \t\r\n:") or not name.isascii():
        return V("invalid-syntax")
    if name.lower() in _FORBIDDEN_HEADER:
        return V("forbidden")
    return None


@dataclass
class IncomingRequest:
    method: str
    path_with_query: str
    headers: list[tuple[str, bytes]]
    body: bytes | Callable[[int], bytes] = b""
    scheme: str = "http"
    authority: str | None = None
    consumed: bool = False


class ResponseBodyStream(OutputStream):
    """The body of the response a component answers with: what it writes goes to the client
    once the host has sent the status and headers (:meth:`attach`); before that it waits."""

    def __init__(self) -> None:
        super().__init__(lambda data: None)
        self.pending = bytearray()
        self.target: Callable[[bytes], None] | None = None
        self.on_finish: Callable[[], None] | None = None
        self.finished = False

    def write(self, data: bytes) -> None:
        if self.target is not None:
            if data:
                self.target(data)
        else:
            self.pending += data

    def attach(self, write: Callable[[bytes], None], finish: Callable[[], None]) -> None:
        self.target, self.on_finish = write, finish
        if self.pending:
            write(bytes(self.pending))
            self.pending.clear()
        if self.finished:
            finish()


@dataclass
class OutgoingResponse:
    headers: Fields
    status: int = 200
    body: OutgoingBody | None = None
    sink: tuple[Callable[[bytes], None], Callable[[], None]] | None = None

    def attach(self, write: Callable[[bytes], None], finish: Callable[[], None]) -> None:
        """Send the body (written so far and from now on) with ``write``; ``finish`` at its end."""
        self.sink = (write, finish)
        if self.body is not None and isinstance(self.body.stream, ResponseBodyStream):
            self.body.stream.attach(write, finish)


@dataclass
class OutgoingBody:
    stream: OutputStream
    written: bool = False
    finished: bool = False


@dataclass
class IncomingBody:
    stream: InputStream
    taken: bool = False


@dataclass
class OutgoingRequest:
    headers: Fields
    method: V = field(default_factory=lambda: V("get"))
    path_with_query: str | None = None
    scheme: V | None = None
    authority: str | None = None
    body: OutgoingBody | None = None
    buffer: bytearray = field(default_factory=bytearray)


@dataclass
class IncomingResponse:
    status: int
    headers: Fields
    body: bytes
    consumed: bool = False


class FutureResponse:
    def __init__(self, request: OutgoingRequest, send: Callable[[OutgoingRequest], Any]) -> None:
        self.request = request
        self._send = send
        self.result: Any = None
        self.taken = False

    def ready(self) -> bool:
        body = self.request.body
        return body is None or body.finished

    def get(self) -> Any:
        if self.result is None and self.ready():
            self.result = self._send(self.request)
        return self.result


class ResponseOutparam:
    def __init__(self, on_set: Callable[[Any], None]) -> None:
        self.on_set = on_set
        self.set = False


class Descriptor:
    def __init__(self, path: str) -> None:
        self.path = path


class DirEntries:
    def __init__(self, entries: list[tuple[str, str]]) -> None:
        self.entries = entries


# --------------------------------------------------------------------------- state


class WasiState:
    """What one instance's WASI calls work on: its resources, stdout/stderr, environment,
    preopened directories, and the HTTP request it is handling (if any)."""

    def __init__(
        self,
        *,
        env: Mapping[str, str] | None = None,
        args: Sequence[str] = ("spin-component",),
        stdout: Callable[[bytes], None] | None = None,
        stderr: Callable[[bytes], None] | None = None,
        preopens: Mapping[str, str] | None = None,
        http_send: Callable[[OutgoingRequest], Any] | None = None,
    ) -> None:
        self.env = dict(env or {})
        self.args = list(args)
        self.stdout = stdout or (lambda b: None)
        self.stderr = stderr or self.stdout
        self.preopens = dict(preopens or {})  # host dir -> guest path
        self.http_send = http_send or _send_with_urllib
        self.objects: dict[int, Any] = {}
        self._next = 1

    def add(self, obj: Any) -> int:
        rep = self._next
        self._next += 1
        self.objects[rep] = obj
        return rep

    def get(self, rep: int) -> Any:
        try:
            return self.objects[rep]
        except KeyError:
            raise WasiTrap(f"unknown resource handle {rep}") from None

    def drop(self, rep: int) -> None:
        self.objects.pop(rep, None)


_HTTP_METHODS = ("get", "head", "post", "put", "delete", "connect", "options", "trace", "patch")


def _method_name(method: V) -> str:
    return str(method.payload) if method.tag == "other" else method.tag.upper()


def _send_with_urllib(request: OutgoingRequest) -> Any:
    """``wasi:http/outgoing-handler``: the request, sent from the host with urllib."""
    import urllib.error
    import urllib.request

    scheme = "https" if request.scheme is not None and request.scheme.tag == "HTTPS" else (
        str(request.scheme.payload) if request.scheme is not None and request.scheme.tag == "other" else "http")
    if not request.authority:
        return Ok(Err(V("HTTP-request-URI-invalid")))
    url = f"{scheme}://{request.authority}{request.path_with_query or '/'}"
    headers = {k: v.decode("latin-1") for k, v in request.headers.entries if k != "content-length"}
    data = bytes(request.buffer) if request.body is not None else None
    req = urllib.request.Request(url, data=data, method=_method_name(request.method), headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            status, got, body = resp.status, resp.headers.items(), resp.read()
    except urllib.error.HTTPError as err:
        status, got, body = err.code, err.headers.items(), err.read()
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, ConnectionRefusedError):
            return Ok(Err(V("connection-refused")))
        if isinstance(reason, TimeoutError):
            return Ok(Err(V("connection-timeout")))
        return Ok(Err(V("internal-error", Some(f"{type(reason).__name__}: {reason}"))))
    return Ok(Ok(IncomingResponse(status, Fields((k, v.encode("latin-1")) for k, v in got), body)))


# --------------------------------------------------------------------------- the host functions


class PythonWasi:
    """Defines the WASI imports of ``component`` on ``linker`` (see the module doc).

    ``state()`` gives the :class:`WasiState` of the instance being run (the caller sets
    :attr:`current` before instantiating and calling it). ``resource_ids`` maps
    ``(interface without version, resource)`` to the host type id it was given.
    """

    PREFIXES = ("wasi:io/", "wasi:cli/", "wasi:clocks/", "wasi:random/", "wasi:filesystem/", "wasi:sockets/",
                "wasi:http/")

    def __init__(self, wt: Any, engine: Any, component: Any, first_id: int = 1000) -> None:
        self.wt = wt
        self.engine = engine
        self.component = component
        self.current: WasiState | None = None
        self.resource_ids: dict[tuple[str, str], int] = {}
        self._first_id = first_id
        self._seen: list[tuple[Any, int]] = []
        self.fast_bytes = False
        self.fast_calls = fast_host_calls(wt)

    def state(self) -> WasiState:
        if self.current is None:
            raise WasiTrap("no WASI state for this call")
        return self.current

    def _type_id(self, rty: Any) -> int:
        for other, tid in self._seen:
            if other == rty:
                return tid
        self._seen.append((rty, self._first_id + len(self._seen)))
        return self._seen[-1][1]

    def own(self, iface: str, resource: str, obj: Any) -> Any:
        rep = self.state().add(obj)
        return self.wt.component.ResourceHost.own(rep, self.resource_ids[(iface, resource)])

    def obj(self, store: Any, res: Any) -> Any:
        """The object behind a handle passed in (made a ``ResourceHost`` by :meth:`_wrap`; the
        handles inside a list argument, such as ``poll``'s, are converted here)."""
        return self.state().get(int(res.rep if hasattr(res, "rep") else res.to_host(store).rep))

    def take(self, store: Any, res: Any) -> Any:
        """An owned handle passed to the host: its object, now out of the table."""
        rep = int(res.rep if hasattr(res, "rep") else res.to_host(store).rep)
        obj = self.state().get(rep)
        self.state().drop(rep)
        return obj

    # -- definition ------------------------------------------------------------------------

    def define(self, linker: Any) -> list[str]:
        """Define every ``wasi:*`` import of the component; return their names."""
        c = self.wt.component
        impls = self._impls()
        defined = []
        imports = self.component.type.imports(self.engine)
        for name, item in imports.items():  # first pass: one host type per distinct resource
            if name.startswith(self.PREFIXES) and isinstance(item.ty, c.ComponentInstanceType):
                base = name.split("@", 1)[0]
                for export, ext in item.ty.exports(self.engine).items():
                    if isinstance(ext.ty, c.ResourceType):
                        self.resource_ids.setdefault((base, export), self._type_id(ext.ty))
        with linker.root() as root:
            for name, item in imports.items():
                if not name.startswith(self.PREFIXES) or not isinstance(item.ty, c.ComponentInstanceType):
                    continue
                base = name.split("@", 1)[0]
                with root.add_instance(name) as inst:
                    for export, ext in item.ty.exports(self.engine).items():
                        ety = ext.ty
                        if isinstance(ety, c.ResourceType):
                            inst.add_resource(export, c.ResourceType.host(self.resource_ids[(base, export)]),
                                              self._dtor)
                        elif isinstance(ety, c.FuncType):
                            impl = impls.get(f"{base}#{export}")
                            inst.add_func(export, self._wrap(f"{name}#{export}", impl, ety.result))
                            if not self.fast_bytes and export.endswith("output-stream.write"):
                                self.fast_bytes = fast_byte_lists(self.wt, ety.params[1][1])
                defined.append(name)
        return defined

    def _dtor(self, store: Any, rep: int) -> None:
        if self.current is not None:
            self.current.drop(rep)

    def _wrap(self, what: str, impl: Callable[..., Any] | None, result: Any) -> Callable[..., Any]:
        wt = self.wt
        low = make_lower(wt, result)
        variant, resource = wt.component.Variant, wt.component.ResourceAny

        def plain(store: Any, args: tuple[Any, ...]) -> list[Any]:
            # every handle passed in is taken over here, once (a borrow left untouched would
            # fail the call: "borrow handles still remain at the end of the call")
            return [a.to_host(store) if isinstance(a, resource) else V(a.tag, a.payload) if isinstance(a, variant)
                    else a for a in args]

        if impl is None:
            fallback = _fallback(wt, result)

            def refuse(store: Any, *args: Any) -> Any:
                plain(store, args)
                if fallback is None:
                    raise WasiTrap(f"{what} is not provided by this host")
                return answer

            answer = low(fallback) if fallback is not None else None
            return refuse

        def call(store: Any, *args: Any) -> Any:
            return low(impl(store, *plain(store, args)))

        return call

    # -- the implementations -----------------------------------------------------------------

    def _impls(self) -> dict[str, Callable[..., Any]]:  # noqa: C901
        o, own = self.obj, self.own
        st = self.state
        f: dict[str, Callable[..., Any]] = {}

        # wasi:io
        f["wasi:io/error#[method]error.to-debug-string"] = lambda s, r: o(s, r).message
        f["wasi:io/poll#[method]pollable.ready"] = lambda s, r: bool(o(s, r).ready())
        f["wasi:io/poll#[method]pollable.block"] = lambda s, r: o(s, r).block()

        def poll(s: Any, pollables: list[Any]) -> list[int]:
            items = [o(s, p) for p in pollables]
            while True:
                ready = [i for i, p in enumerate(items) if p.ready()]
                if ready:
                    return ready
                waiting = [p for p in items if p.wait is not None]
                (waiting[0] if waiting else items[0]).block()  # a timer, or the trap of block()

        f["wasi:io/poll#poll"] = poll

        def read(s: Any, r: Any, n: int) -> Any:
            stream = o(s, r)
            if stream.closed:
                return Err(V("closed"))
            chunk = stream.read(min(int(n), 1 << 20))
            return Err(V("closed")) if not chunk and stream.closed else Ok(chunk)

        def skip(s: Any, r: Any, n: int) -> Any:
            got = read(s, r, n)
            return Ok(len(got.value)) if isinstance(got, Ok) else got

        def out(fn: Callable[..., Any]) -> Callable[..., Any]:
            def call(s: Any, r: Any, *args: Any) -> Any:
                stream = o(s, r)
                if stream.closed:
                    return Err(V("closed"))
                try:
                    return Ok(fn(stream, *args))
                except OSError as exc:
                    return Err(V("last-operation-failed", own("wasi:io/error", "error", IoError(str(exc)))))
            return call

        def write_flush(stream: OutputStream, data: bytes) -> None:
            stream.write(data)
            stream.flush()

        def zeroes(stream: OutputStream, n: int) -> None:
            stream.write(bytes(int(n)))

        def zeroes_flush(stream: OutputStream, n: int) -> None:
            stream.write(bytes(int(n)))
            stream.flush()

        def splice(s: Any, r: Any, src: Any, n: int) -> Any:
            source = o(s, src)
            got = read(s, src, n) if not source.closed else Err(V("closed"))
            if isinstance(got, Err):
                return got
            def write_all(stream: OutputStream, data: bytes) -> int:
                stream.write(data)
                return len(data)

            return out(write_all)(s, r, got.value)

        streams = "wasi:io/streams#[method]"
        f[streams + "input-stream.read"] = read
        f[streams + "input-stream.blocking-read"] = read
        f[streams + "input-stream.skip"] = skip
        f[streams + "input-stream.blocking-skip"] = skip
        f[streams + "input-stream.subscribe"] = lambda s, r: own("wasi:io/streams", "pollable", Pollable())
        f[streams + "output-stream.check-write"] = out(lambda stream: 1 << 20)
        f[streams + "output-stream.write"] = out(lambda stream, data: stream.write(bytes(data)))
        f[streams + "output-stream.blocking-write-and-flush"] = out(lambda stream, data: write_flush(stream, bytes(data)))
        f[streams + "output-stream.flush"] = out(lambda stream: stream.flush())
        f[streams + "output-stream.blocking-flush"] = out(lambda stream: stream.flush())
        f[streams + "output-stream.subscribe"] = lambda s, r: own("wasi:io/streams", "pollable", Pollable())
        f[streams + "output-stream.write-zeroes"] = out(zeroes)
        f[streams + "output-stream.blocking-write-zeroes-and-flush"] = out(zeroes_flush)
        f[streams + "output-stream.splice"] = splice
        f[streams + "output-stream.blocking-splice"] = splice

        # wasi:cli
        f["wasi:cli/environment#get-environment"] = lambda s: [(k, v) for k, v in st().env.items()]
        f["wasi:cli/environment#get-arguments"] = lambda s: list(st().args)
        f["wasi:cli/environment#initial-cwd"] = lambda s: None

        def exit_(s: Any, status: Any) -> None:
            raise WasiTrap(f"the component exited ({'success' if not isinstance(status, Err) else 'failure'})")

        f["wasi:cli/exit#exit"] = exit_
        f["wasi:cli/stdin#get-stdin"] = lambda s: own("wasi:cli/stdin", "input-stream", InputStream())
        f["wasi:cli/stdout#get-stdout"] = lambda s: own("wasi:cli/stdout", "output-stream", OutputStream(st().stdout))
        f["wasi:cli/stderr#get-stderr"] = lambda s: own("wasi:cli/stderr", "output-stream", OutputStream(st().stderr))
        for which in ("stdin", "stdout", "stderr"):
            f[f"wasi:cli/terminal-{which}#get-terminal-{which}"] = lambda s: None

        # wasi:clocks
        f["wasi:clocks/monotonic-clock#now"] = lambda s: time.monotonic_ns()
        f["wasi:clocks/monotonic-clock#resolution"] = lambda s: 1

        def until(deadline_ns: int) -> Pollable:
            return Pollable(lambda: time.monotonic_ns() >= deadline_ns,
                            lambda: time.sleep(max(0.0, (deadline_ns - time.monotonic_ns()) / 1e9)))

        f["wasi:clocks/monotonic-clock#subscribe-instant"] = lambda s, when: own(
            "wasi:clocks/monotonic-clock", "pollable", until(int(when)))
        f["wasi:clocks/monotonic-clock#subscribe-duration"] = lambda s, d: own(
            "wasi:clocks/monotonic-clock", "pollable", until(time.monotonic_ns() + int(d)))

        def wall_now(s: Any) -> dict[str, int]:
            ns = time.time_ns()
            return {"seconds": ns // 1_000_000_000, "nanoseconds": ns % 1_000_000_000}

        f["wasi:clocks/wall-clock#now"] = wall_now
        f["wasi:clocks/wall-clock#resolution"] = lambda s: {"seconds": 0, "nanoseconds": 1}

        # wasi:random
        f["wasi:random/random#get-random-bytes"] = lambda s, n: secrets.token_bytes(int(n))
        f["wasi:random/random#get-random-u64"] = lambda s: secrets.randbits(64)
        f["wasi:random/insecure#get-insecure-random-bytes"] = lambda s, n: os.urandom(int(n))
        f["wasi:random/insecure#get-insecure-random-u64"] = lambda s: secrets.randbits(64)
        f["wasi:random/insecure-seed#insecure-seed"] = lambda s: (secrets.randbits(64), secrets.randbits(64))

        self._filesystem(f)
        self._http(f)
        return f

    # -- wasi:filesystem (read-only) ----------------------------------------------------------

    def _filesystem(self, f: dict[str, Callable[..., Any]]) -> None:  # noqa: C901
        o, own, st = self.obj, self.own, self.state
        fs = "wasi:filesystem/types"

        def kind(mode: int) -> str:
            if stat_mod.S_ISDIR(mode):
                return "directory"
            if stat_mod.S_ISREG(mode):
                return "regular-file"
            if stat_mod.S_ISLNK(mode):
                return "symbolic-link"
            return "unknown"

        def code(exc: OSError) -> Err:
            import errno

            names = {errno.ENOENT: "no-entry", errno.EACCES: "access", errno.EPERM: "not-permitted",
                     errno.ENOTDIR: "not-directory", errno.EISDIR: "is-directory", errno.EEXIST: "exist",
                     errno.ELOOP: "loop", errno.ENAMETOOLONG: "name-too-long"}
            return Err(names.get(exc.errno or 0, "io"))

        def ts(seconds: float) -> dict[str, int]:
            ns = int(seconds * 1e9)
            return {"seconds": ns // 1_000_000_000, "nanoseconds": ns % 1_000_000_000}

        def stat_of(path: str, follow: bool = True) -> Any:
            try:
                sr = os.stat(path) if follow else os.lstat(path)
            except OSError as exc:
                return code(exc)
            return Ok({"type": kind(sr.st_mode), "link-count": sr.st_nlink, "size": sr.st_size,
                       "data-access-timestamp": Some(ts(sr.st_atime)),
                       "data-modification-timestamp": Some(ts(sr.st_mtime)),
                       "status-change-timestamp": Some(ts(sr.st_ctime))})

        def inside(d: Descriptor, path: str) -> str | None:
            """``path`` under the descriptor's directory, or None if it would leave it."""
            if os.path.isabs(path):
                return None
            full = os.path.normpath(os.path.join(d.path, path))
            root = os.path.realpath(d.path)
            real = os.path.realpath(full)
            return full if real == root or real.startswith(root + os.sep) else None

        def open_at(s: Any, r: Any, path_flags: Any, path: str, open_flags: Any, flags: Any) -> Any:
            d = o(s, r)
            target = inside(d, path)
            if target is None:
                return Err("not-permitted")
            if open_flags & {"create", "truncate", "exclusive"} or "write" in flags:
                return Err("read-only")  # mounted files are read-only, as in Spin
            if not os.path.exists(target):
                return Err("no-entry")
            if "directory" in open_flags and not os.path.isdir(target):
                return Err("not-directory")
            return Ok(own(fs, "descriptor", Descriptor(target)))

        def read_via_stream(s: Any, r: Any, offset: int) -> Any:
            d = o(s, r)
            try:
                fh = open(d.path, "rb")
            except OSError as exc:
                return code(exc)
            fh.seek(int(offset))

            def reader(n: int) -> bytes:
                chunk = fh.read(n)
                if not chunk:
                    fh.close()
                return chunk

            return Ok(own(fs, "input-stream", InputStream(reader=reader)))

        def read(s: Any, r: Any, length: int, offset: int) -> Any:
            d = o(s, r)
            try:
                with open(d.path, "rb") as fh:
                    fh.seek(int(offset))
                    data = fh.read(int(length))
            except OSError as exc:
                return code(exc)
            return Ok((data, len(data) < int(length)))

        def read_directory(s: Any, r: Any) -> Any:
            d = o(s, r)
            try:
                names = sorted(os.listdir(d.path))
            except OSError as exc:
                return code(exc)
            entries = []
            for n in names:
                try:
                    entries.append((kind(os.lstat(os.path.join(d.path, n)).st_mode), n))
                except OSError:
                    continue
            return Ok(own(fs, "directory-entry-stream", DirEntries(entries)))

        def next_entry(s: Any, r: Any) -> Any:
            it = o(s, r)
            if not it.entries:
                return Ok(None)
            t, n = it.entries.pop(0)
            return Ok(Some({"type": t, "name": n}))

        def metadata_hash(path: str) -> Any:
            try:
                sr = os.stat(path)
            except OSError as exc:
                return code(exc)
            return Ok({"lower": sr.st_ino & (2**64 - 1), "upper": sr.st_dev & (2**64 - 1)})

        def stat_at(s: Any, r: Any, path_flags: Any, path: str) -> Any:
            target = inside(o(s, r), path)
            return Err("not-permitted") if target is None else stat_of(target, "symlink-follow" in path_flags)

        def hash_at(s: Any, r: Any, path_flags: Any, path: str) -> Any:
            target = inside(o(s, r), path)
            return Err("not-permitted") if target is None else metadata_hash(target)

        m = f"{fs}#[method]descriptor."
        f[m + "read-via-stream"] = read_via_stream
        f[m + "read"] = read
        f[m + "get-type"] = lambda s, r: Ok(kind(os.stat(o(s, r).path).st_mode))
        f[m + "get-flags"] = lambda s, r: Ok({"read"})
        f[m + "stat"] = lambda s, r: stat_of(o(s, r).path)
        f[m + "stat-at"] = stat_at
        f[m + "open-at"] = open_at
        f[m + "read-directory"] = read_directory
        f[m + "metadata-hash"] = lambda s, r: metadata_hash(o(s, r).path)
        f[m + "metadata-hash-at"] = hash_at
        f[m + "is-same-object"] = lambda s, a, b: os.path.realpath(o(s, a).path) == os.path.realpath(o(s, b).path)
        f[m + "advise"] = lambda s, r, *a: Ok(None)
        f[m + "sync"] = lambda s, r: Ok(None)
        f[m + "sync-data"] = lambda s, r: Ok(None)
        f[f"{fs}#[method]directory-entry-stream.read-directory-entry"] = next_entry
        f[f"{fs}#filesystem-error-code"] = lambda s, r: None
        f["wasi:filesystem/preopens#get-directories"] = lambda s: [
            (own("wasi:filesystem/preopens", "descriptor", Descriptor(host)), guest)
            for host, guest in st().preopens.items()
        ]

    # -- wasi:http ---------------------------------------------------------------------------

    def _http(self, f: dict[str, Callable[..., Any]]) -> None:  # noqa: C901
        o, own, take, st = self.obj, self.own, self.take, self.state
        t = "wasi:http/types"
        m = f"{t}#[method]"

        def fields_from_list(s: Any, entries: list[tuple[str, bytes]]) -> Any:
            for name, _ in entries:
                problem = _header_problem(name, False)
                if problem is not None:
                    return Err(problem)
            return Ok(own(t, "fields", Fields((n, bytes(v)) for n, v in entries)))

        def fields_set(s: Any, r: Any, name: str, values: list[bytes]) -> Any:
            fl = o(s, r)
            problem = _header_problem(name, fl.immutable)
            if problem is not None:
                return Err(problem)
            key = name.lower()
            fl.entries = [(k, v) for k, v in fl.entries if k != key] + [(key, bytes(v)) for v in values]
            return Ok(None)

        def fields_delete(s: Any, r: Any, name: str) -> Any:
            fl = o(s, r)
            if fl.immutable:
                return Err(V("immutable"))
            fl.entries = [(k, v) for k, v in fl.entries if k != name.lower()]
            return Ok(None)

        def fields_append(s: Any, r: Any, name: str, value: bytes) -> Any:
            fl = o(s, r)
            problem = _header_problem(name, fl.immutable)
            if problem is not None:
                return Err(problem)
            fl.entries.append((name.lower(), bytes(value)))
            return Ok(None)

        f[f"{t}#[constructor]fields"] = lambda s: own(t, "fields", Fields())
        f[f"{t}#[static]fields.from-list"] = fields_from_list
        f[m + "fields.get"] = lambda s, r, name: o(s, r).get(name)
        f[m + "fields.has"] = lambda s, r, name: bool(o(s, r).get(name))
        f[m + "fields.set"] = fields_set
        f[m + "fields.delete"] = fields_delete
        f[m + "fields.append"] = fields_append
        f[m + "fields.entries"] = lambda s, r: list(o(s, r).entries)
        f[m + "fields.clone"] = lambda s, r: own(t, "fields", Fields(o(s, r).entries))

        # incoming request (what the host hands to incoming-handler#handle)
        def req_method(s: Any, r: Any) -> V:
            name = o(s, r).method
            return V(name.lower()) if name.lower() in _HTTP_METHODS else V("other", name)

        def req_scheme(s: Any, r: Any) -> Any:
            scheme = o(s, r).scheme
            return Some(V("HTTP") if scheme == "http" else V("HTTPS") if scheme == "https" else V("other", scheme))

        def req_consume(s: Any, r: Any) -> Any:
            req = o(s, r)
            if req.consumed:
                return Err(None)
            req.consumed = True
            body = req.body
            stream = InputStream(reader=body) if callable(body) else InputStream(bytes(body))
            return Ok(own(t, "incoming-body", IncomingBody(stream)))

        f[m + "incoming-request.method"] = req_method
        f[m + "incoming-request.path-with-query"] = lambda s, r: Some(o(s, r).path_with_query)
        f[m + "incoming-request.scheme"] = req_scheme
        f[m + "incoming-request.authority"] = lambda s, r: Some(o(s, r).authority) if o(s, r).authority else None
        f[m + "incoming-request.headers"] = lambda s, r: own(t, "fields", Fields(o(s, r).headers, immutable=True))
        f[m + "incoming-request.consume"] = req_consume

        def body_stream(s: Any, r: Any) -> Any:
            body = o(s, r)
            if body.taken:
                return Err(None)
            body.taken = True
            return Ok(own(t, "input-stream", body.stream))

        f[m + "incoming-body.stream"] = body_stream
        f[f"{t}#[static]incoming-body.finish"] = lambda s, r: (take(s, r), own(t, "future-trailers", Pollable()))[1]
        f[m + "future-trailers.subscribe"] = lambda s, r: own(t, "pollable", Pollable())
        f[m + "future-trailers.get"] = lambda s, r: Some(Ok(Ok(None)))

        # outgoing response (what the guest answers with)
        def resp_new(s: Any, headers: Any) -> Any:
            fl = take(s, headers)
            fl.immutable = True
            return own(t, "outgoing-response", OutgoingResponse(fl))

        def resp_set_status(s: Any, r: Any, status: int) -> Any:
            if not 100 <= int(status) <= 599:
                return Err(None)
            o(s, r).status = int(status)
            return Ok(None)

        def resp_body(s: Any, r: Any) -> Any:
            resp = o(s, r)
            if resp.body is not None:
                return Err(None)
            stream = ResponseBodyStream()
            if resp.sink is not None:
                stream.attach(*resp.sink)
            resp.body = OutgoingBody(stream)
            return Ok(own(t, "outgoing-body", resp.body))

        def body_write(s: Any, r: Any) -> Any:
            body = o(s, r)
            if body.written:
                return Err(None)
            body.written = True
            return Ok(own(t, "output-stream", body.stream))

        def body_finish(s: Any, r: Any, trailers: Any) -> Any:
            body = take(s, r)
            body.finished = True
            if trailers is not None:
                take(s, trailers)
            stream = body.stream
            stream.flush()
            if isinstance(stream, ResponseBodyStream):
                stream.finished = True
                if stream.on_finish is not None:
                    stream.on_finish()
            return Ok(None)

        def outparam_set(s: Any, param: Any, response: Any) -> None:
            out = take(s, param)
            if out.set:
                raise WasiTrap("response-outparam.set called twice")
            out.set = True
            if isinstance(response, Err) or not hasattr(response, "rep"):
                out.on_set(Err(response.value if isinstance(response, Err) else response))
                return
            out.on_set(Ok(take(s, response)))

        f[f"{t}#[constructor]outgoing-response"] = resp_new
        f[m + "outgoing-response.status-code"] = lambda s, r: o(s, r).status
        f[m + "outgoing-response.set-status-code"] = resp_set_status
        f[m + "outgoing-response.headers"] = lambda s, r: own(t, "fields", o(s, r).headers)
        f[m + "outgoing-response.body"] = resp_body
        f[m + "outgoing-body.write"] = body_write
        f[f"{t}#[static]outgoing-body.finish"] = body_finish
        f[f"{t}#[static]response-outparam.set"] = outparam_set

        # outgoing requests (the guest's outbound HTTP)
        def oreq_new(s: Any, headers: Any) -> Any:
            fl = take(s, headers)
            fl.immutable = True
            return own(t, "outgoing-request", OutgoingRequest(fl))

        def oreq_body(s: Any, r: Any) -> Any:
            req = o(s, r)
            if req.body is not None:
                return Err(None)
            req.body = OutgoingBody(OutputStream(req.buffer.extend))
            return Ok(own(t, "outgoing-body", req.body))

        def setter(attr: str, check: Callable[[Any], bool] = lambda v: True) -> Callable[..., Any]:
            def call(s: Any, r: Any, value: Any) -> Any:
                if not check(value):
                    return Err(None)
                setattr(o(s, r), attr, value)
                return Ok(None)
            return call

        f[f"{t}#[constructor]outgoing-request"] = oreq_new
        f[m + "outgoing-request.body"] = oreq_body
        f[m + "outgoing-request.method"] = lambda s, r: o(s, r).method
        f[m + "outgoing-request.set-method"] = setter("method")
        f[m + "outgoing-request.path-with-query"] = lambda s, r: o(s, r).path_with_query
        f[m + "outgoing-request.set-path-with-query"] = setter("path_with_query")
        f[m + "outgoing-request.scheme"] = lambda s, r: o(s, r).scheme
        f[m + "outgoing-request.set-scheme"] = setter("scheme")
        f[m + "outgoing-request.authority"] = lambda s, r: o(s, r).authority
        f[m + "outgoing-request.set-authority"] = setter("authority")
        f[m + "outgoing-request.headers"] = lambda s, r: own(t, "fields", o(s, r).headers)
        f[f"{t}#[constructor]request-options"] = lambda s: own(t, "request-options", {})
        for name in ("connect-timeout", "first-byte-timeout", "between-bytes-timeout"):
            f[m + f"request-options.{name}"] = lambda s, r, name=name: o(s, r).get(name)
            f[m + f"request-options.set-{name}"] = lambda s, r, v, name=name: Ok(o(s, r).__setitem__(name, v))

        def handle(s: Any, request: Any, options: Any) -> Any:
            req = take(s, request)
            if options is not None:
                take(s, options)
            return Ok(own("wasi:http/outgoing-handler", "future-incoming-response", FutureResponse(req, st().http_send)))

        f["wasi:http/outgoing-handler#handle"] = handle

        def fut_get(s: Any, r: Any) -> Any:
            fut = o(s, r)
            result = fut.get()
            if result is None:
                return None
            if fut.taken:
                return Some(Err(None))
            fut.taken = True
            inner = result.value
            if isinstance(inner, Ok):
                return Some(Ok(Ok(own(t, "incoming-response", inner.value))))
            return Some(Ok(inner))

        f[m + "future-incoming-response.subscribe"] = lambda s, r: own(t, "pollable", Pollable(o(s, r).ready))
        f[m + "future-incoming-response.get"] = fut_get

        def iresp_consume(s: Any, r: Any) -> Any:
            resp = o(s, r)
            if resp.consumed:
                return Err(None)
            resp.consumed = True
            return Ok(own(t, "incoming-body", IncomingBody(InputStream(resp.body))))

        f[m + "incoming-response.status"] = lambda s, r: o(s, r).status
        f[m + "incoming-response.headers"] = lambda s, r: own(t, "fields", Fields(o(s, r).headers.entries, True))
        f[m + "incoming-response.consume"] = iresp_consume
        f[f"{t}#http-error-code"] = lambda s, r: None


def _fallback(wt: Any, result: Any) -> Any:
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
