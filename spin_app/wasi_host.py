"""WASI 0.2 and ``wasi:http`` of the local Spin host, by their historical module name:
re-exports :mod:`active_data_flow.spin_app.local_host.wasi` (whose docstring describes them), so that
``from active_data_flow.spin_app.wasi_host import …`` keeps working.
"""

from __future__ import annotations

from active_data_flow.spin_app.local_host.wasi.fast import fast_byte_lists, fast_host_calls
from active_data_flow.spin_app.local_host.wasi.filesystem import Descriptor as Descriptor
from active_data_flow.spin_app.local_host.wasi.filesystem import DirEntries as DirEntries
from active_data_flow.spin_app.local_host.wasi.http_types import Fields as Fields
from active_data_flow.spin_app.local_host.wasi.http_types import FutureResponse as FutureResponse
from active_data_flow.spin_app.local_host.wasi.http_types import IncomingBody as IncomingBody
from active_data_flow.spin_app.local_host.wasi.http_types import IncomingRequest, OutgoingResponse
from active_data_flow.spin_app.local_host.wasi.http_types import IncomingResponse as IncomingResponse
from active_data_flow.spin_app.local_host.wasi.http_types import OutgoingBody as OutgoingBody
from active_data_flow.spin_app.local_host.wasi.http_types import OutgoingRequest as OutgoingRequest
from active_data_flow.spin_app.local_host.wasi.http_types import ResponseBodyStream as ResponseBodyStream
from active_data_flow.spin_app.local_host.wasi.http_types import ResponseOutparam as ResponseOutparam
from active_data_flow.spin_app.local_host.wasi.http_types import header_problem as _header_problem  # noqa: F401  (its former name)
from active_data_flow.spin_app.local_host.wasi.python_wasi import PythonWasi
from active_data_flow.spin_app.local_host.wasi.state import WasiState
from active_data_flow.spin_app.local_host.wasi.streams import InputStream as InputStream
from active_data_flow.spin_app.local_host.wasi.streams import IoError as IoError
from active_data_flow.spin_app.local_host.wasi.streams import OutputStream as OutputStream
from active_data_flow.spin_app.local_host.wasi.streams import Pollable as Pollable
from active_data_flow.spin_app.local_host.wasi.values import Err, Ok, Some, V, WasiTrap, make_lower

__all__ = [
    "Err", "IncomingRequest", "Ok", "OutgoingResponse", "PythonWasi", "Some", "V", "WasiState", "WasiTrap",
    "fast_byte_lists", "fast_host_calls", "make_lower",
]
