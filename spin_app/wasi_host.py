"""WASI 0.2 and ``wasi:http`` of the local Spin host, by their historical module name:
re-exports :mod:`spin_app.local_host.wasi` (whose docstring describes them), so that
``from spin_app.wasi_host import …`` keeps working.
"""

from __future__ import annotations

from spin_app.local_host.wasi.fast import fast_byte_lists, fast_host_calls
from spin_app.local_host.wasi.filesystem import Descriptor as Descriptor
from spin_app.local_host.wasi.filesystem import DirEntries as DirEntries
from spin_app.local_host.wasi.http_types import Fields as Fields
from spin_app.local_host.wasi.http_types import FutureResponse as FutureResponse
from spin_app.local_host.wasi.http_types import IncomingBody as IncomingBody
from spin_app.local_host.wasi.http_types import IncomingRequest, OutgoingResponse
from spin_app.local_host.wasi.http_types import IncomingResponse as IncomingResponse
from spin_app.local_host.wasi.http_types import OutgoingBody as OutgoingBody
from spin_app.local_host.wasi.http_types import OutgoingRequest as OutgoingRequest
from spin_app.local_host.wasi.http_types import ResponseBodyStream as ResponseBodyStream
from spin_app.local_host.wasi.http_types import ResponseOutparam as ResponseOutparam
from spin_app.local_host.wasi.http_types import header_problem as _header_problem  # noqa: F401  (its former name)
from spin_app.local_host.wasi.python_wasi import PythonWasi
from spin_app.local_host.wasi.state import WasiState
from spin_app.local_host.wasi.streams import InputStream as InputStream
from spin_app.local_host.wasi.streams import IoError as IoError
from spin_app.local_host.wasi.streams import OutputStream as OutputStream
from spin_app.local_host.wasi.streams import Pollable as Pollable
from spin_app.local_host.wasi.values import Err, Ok, Some, V, WasiTrap, make_lower

__all__ = [
    "Err", "IncomingRequest", "Ok", "OutgoingResponse", "PythonWasi", "Some", "V", "WasiState", "WasiTrap",
    "fast_byte_lists", "fast_host_calls", "make_lower",
]
