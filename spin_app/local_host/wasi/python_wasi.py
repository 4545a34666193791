"""The WASI 0.2 imports of a component, defined on a ``wasmtime`` linker as Python host functions.

:class:`PythonWasi` defines every ``wasi:*`` import the component has: the functions of
:mod:`~active_data_flow.spin_app.local_host.wasi.io_functions`, :mod:`~active_data_flow.spin_app.local_host.wasi.system_functions`,
:mod:`~active_data_flow.spin_app.local_host.wasi.filesystem` and :mod:`~active_data_flow.spin_app.local_host.wasi.http_functions`;
any other (sockets...) answers a polite error when its type has one (:func:`fallback`), else
traps. Resources are Python objects in one table per instance (:class:`WasiState`); a handle is
``ResourceHost.own(rep, type id)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from active_data_flow.spin_app.local_host.wasi.fast import fast_byte_lists, fast_host_calls
from active_data_flow.spin_app.local_host.wasi.filesystem import filesystem_functions
from active_data_flow.spin_app.local_host.wasi.http_functions import http_functions
from active_data_flow.spin_app.local_host.wasi.io_functions import io_functions
from active_data_flow.spin_app.local_host.wasi.state import HostFunctions, WasiState
from active_data_flow.spin_app.local_host.wasi.system_functions import (
    cli_functions,
    clock_functions,
    random_functions,
)
from active_data_flow.spin_app.local_host.wasi.values import V, WasiTrap, fallback, make_lower

__all__ = ["PythonWasi"]


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
            answer_with = fallback(wt, result)

            def refuse(store: Any, *args: Any) -> Any:
                plain(store, args)
                if answer_with is None:
                    raise WasiTrap(f"{what} is not provided by this host")
                return answer

            answer = low(answer_with) if answer_with is not None else None
            return refuse

        def call(store: Any, *args: Any) -> Any:
            return low(impl(store, *plain(store, args)))

        return call

    # -- the implementations -----------------------------------------------------------------

    def _impls(self) -> HostFunctions:
        """Every host function, by ``interface-without-version#function``."""
        f: HostFunctions = {}
        io_functions(f, self)
        cli_functions(f, self)
        clock_functions(f, self)
        random_functions(f)
        filesystem_functions(f, self)
        http_functions(f, self)
        return f
