"""WASI 0.2 and ``wasi:http`` for the local Spin host, written with Python host functions.

The PyPI ``wasmtime`` package's WASI (``Linker.add_wasip2`` / ``add_wasi_http``) is the
runtime's own, in native code, and offers no way to hand a component an *incoming* HTTP
request: the ``incoming-request`` and ``response-outparam`` resources the export
``wasi:http/incoming-handler#handle`` takes can only be made inside it. This package defines
the WASI interfaces a component imports — ``wasi:io``, ``wasi:cli``, ``wasi:clocks``,
``wasi:random``, ``wasi:filesystem`` (read-only, the preopened directories) and ``wasi:http``
(incoming and outgoing) — as Python host functions over Python objects, so that
:class:`active_data_flow.spin_app.local_host.component.ComponentHost` can serve HTTP with a fresh instance per
request, as Spin does, on the same engine Spin uses. Sockets are not provided (their calls
answer ``not-supported`` / ``access-denied``), as in a Spin component.

==========================  ================================================================
``values``                  ``Ok`` / ``Err`` / ``Some`` / ``V``, ``WasiTrap``, ``make_lower``
``fast``                    cheaper host calls and byte lists with the ``wasmtime`` package
``streams``                 ``wasi:io`` objects: pollables, input and output streams
``http_types``              ``wasi:http`` objects: fields, requests, responses, bodies
``state``                   ``WasiState`` (one instance's resources), ``Handles``
``io_functions``            the ``wasi:io`` host functions
``system_functions``        ``wasi:cli``, ``wasi:clocks``, ``wasi:random``
``filesystem``              ``wasi:filesystem`` (read-only)
``http_functions``          ``wasi:http/types`` and ``wasi:http/outgoing-handler``
``python_wasi``             ``PythonWasi``: defines them all on a linker
==========================  ================================================================

``active_data_flow.spin_app.wasi_host`` re-exports the public names.
"""
