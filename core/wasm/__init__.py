"""WebAssembly steps: sandboxed user modules with limits, permissions, a signed registry and a
compiled-module cache.

Pure standard library at import (like the rest of ``core``); ``wasmtime``, ``boto3``,
``SQLAlchemy`` and ``cryptography`` are imported when first needed (extra ``wasm``).

Modules:

``errors``       the exceptions (limit kinds, traps, permission denials, integrity)
``limits``       :class:`Limits` — fuel, memory, timeout, output size
``permissions``  :class:`PermissionSet` — ``http:read:<url glob>`` and friends
``storage``      where module binaries and files live: a local directory or S3
``executor``     :class:`WasmExecutor` — load, compile (cached), call with JSON in / out;
                 its parts: ``runtime`` (engine, linker, timeout watchdog), ``compiled`` (a
                 module and its ABI check), ``session`` (the call path), ``instance`` (the
                 reused memory-ABI instance), ``classify`` (what went wrong, as a ``WasmError``)
``hostfns``      the host functions a module may import from ``adf``: ``host_call`` (the
                 per-call state and guest memory), ``host_basic`` (log, context),
                 ``host_http``, ``host_db`` (with ``sql_shape``), ``host_files``
``cache``        the in-memory LRU of compiled modules and the ahead-of-time disk cache
``registry``     :class:`ModuleRegistry` — upload, verify, list, permissions, execution log;
                 its parts: ``registry_store`` (records, tables, database),
                 ``registry_checks`` (uploads, keys, signatures), ``registry_logs``
``step``         the ``wasm`` flow step
``cli``          ``adf wasm …`` (with ``cli_run``: ``adf wasm test``, and ``cli_support``)
"""
