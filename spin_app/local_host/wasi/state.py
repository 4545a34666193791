"""What one instance's WASI calls work on (:class:`WasiState`), and how the host functions
reach it (:class:`Handles`: the resource handles a component passes in and gets back)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from active_data_flow.spin_app.local_host.wasi.http_types import OutgoingRequest, send_with_urllib
from active_data_flow.spin_app.local_host.wasi.values import WasiTrap

__all__ = ["Handles", "HostFunctions", "WasiState"]

#: host functions by ``interface-without-version#function``
HostFunctions = dict[str, Callable[..., Any]]


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
        self.http_send = http_send or send_with_urllib
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


class Handles(Protocol):
    """The resource handles of the instance being run: what the host functions are given
    (:class:`~active_data_flow.spin_app.local_host.wasi.python_wasi.PythonWasi`)."""

    def state(self) -> WasiState:
        """The :class:`WasiState` of the instance being run."""
        ...

    def own(self, iface: str, resource: str, obj: Any) -> Any:
        """A new owned handle to ``obj``, a resource of ``iface``."""
        ...

    def obj(self, store: Any, res: Any) -> Any:
        """The object behind a handle passed in."""
        ...

    def take(self, store: Any, res: Any) -> Any:
        """An owned handle passed to the host: its object, now out of the table."""
        ...
