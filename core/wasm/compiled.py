"""A compiled module and the check that it follows one of the guest ABIs (docs/WASM_ABI.md).

:func:`describe_module` reads a compiled ``wasmtime.Module``'s exports and imports, decides its
ABI (``memory``: ``memory`` + ``alloc`` + the called function; ``wasi``: a ``_start`` command),
refuses imports the host does not provide and signatures that do not match, and
pre-instantiates it on the runtime's linker: a :class:`CompiledModule` is ready to call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from active_data_flow.wasm.classify import first_line
from active_data_flow.wasm.errors import WasmAbiError
from active_data_flow.wasm.hostfns import HOST_FUNCTIONS, HOST_MODULE
from active_data_flow.wasm.permissions import PermissionSet
from active_data_flow.wasm.runtime import WASI_MODULE, WASM_PAGE, Runtime

__all__ = ["SIG_MEMORY_FN", "CompiledModule", "Signature", "describe_module", "sig_text"]

#: (parameter types, result types) of a function, in wasm value types
Signature = tuple[tuple[str, ...], tuple[str, ...]]

#: ``NAME(ptr, len) -> i64``: the function a memory-ABI module is called through
SIG_MEMORY_FN: Signature = (("i32", "i32"), ("i64",))
_SIG_ALLOC: Signature = (("i32",), ("i32",))
_SIG_DEALLOC: Signature = (("i32", "i32"), ())
_SIG_VOID: Signature = ((), ())


@dataclass
class CompiledModule:
    """A validated, compiled module. ``abi``: ``"memory"`` or ``"wasi"``; ``module_id``:
    ``id@version`` when loaded from the registry, else the file name or ``sha256:<12 hex>``;
    ``permissions``: the registry's (empty otherwise)."""

    sha256: str
    abi: str
    exports: tuple[str, ...]
    module: Any  # wasmtime.Module
    module_id: str = ""
    permissions: PermissionSet = field(default_factory=PermissionSet)
    functions: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = field(default_factory=dict, repr=False,
                                                                          compare=False)
    min_memory_bytes: int = field(default=0, repr=False, compare=False)
    uses_wasi: bool = field(default=False, repr=False, compare=False)
    instance_pre: Any = field(default=None, repr=False, compare=False)


def describe_module(rt: Runtime, module: Any, sha: str, module_id: str) -> CompiledModule:
    """The :class:`CompiledModule` of a compiled ``wasmtime.Module``; :class:`WasmAbiError`
    listing every problem when it does not follow a guest ABI or cannot be linked."""
    w = rt.wasmtime
    functions, memories, names = _exports(w, module)
    problems, uses_wasi = _import_problems(module)
    abi = _abi(functions, memories, problems)
    for name, sig in (("alloc", _SIG_ALLOC), ("dealloc", _SIG_DEALLOC), ("_initialize", _SIG_VOID)):
        if name in functions and functions[name] != sig:
            problems.append(f"{name} must have the signature {sig_text(sig)}, not {sig_text(functions[name])}")
    if problems:
        raise WasmAbiError(f"module {module_id} does not follow the guest ABI: " + "; ".join(problems))
    min_memory = 0
    for ty in memories.values():
        page = int(getattr(ty, "page_size", WASM_PAGE) or WASM_PAGE)
        min_memory = max(min_memory, int(ty.limits.min) * page)
    try:
        pre = rt.linker.instantiate_pre(module)
    except w.WasmtimeError as exc:
        raise WasmAbiError(f"module {module_id} cannot be linked: {first_line(str(exc))}") from None
    return CompiledModule(sha256=sha, abi=abi, exports=tuple(names), module=module, module_id=module_id,
                          functions=functions, min_memory_bytes=min_memory, uses_wasi=uses_wasi,
                          instance_pre=pre)


def _exports(w: Any, module: Any) -> tuple[dict[str, Signature], dict[str, Any], list[str]]:
    """The exported functions (name -> signature), memories (name -> type) and every export's name."""
    functions: dict[str, Signature] = {}
    memories: dict[str, Any] = {}
    names: list[str] = []
    for export in module.exports:
        names.append(export.name)
        ty = export.type
        if isinstance(ty, w.FuncType):
            functions[export.name] = (tuple(str(p) for p in ty.params), tuple(str(r) for r in ty.results))
        elif isinstance(ty, w.MemoryType):
            memories[export.name] = ty
    return functions, memories, names


def _import_problems(module: Any) -> tuple[list[str], bool]:
    """The imports the host does not provide, and whether the module imports WASI."""
    problems: list[str] = []
    uses_wasi = False
    for imp in module.imports:
        if imp.module == WASI_MODULE:
            uses_wasi = True
        elif imp.module == HOST_MODULE:
            if imp.name not in HOST_FUNCTIONS:
                problems.append(f"imports unknown host function {HOST_MODULE}.{imp.name} "
                                f"(host functions: {', '.join(sorted(HOST_FUNCTIONS))})")
        else:
            problems.append(f"imports {imp.module}.{imp.name}, which the host does not provide "
                            f"(only {HOST_MODULE}.* and {WASI_MODULE}.*)")
    return problems, uses_wasi


def _abi(functions: dict[str, Signature], memories: dict[str, Any], problems: list[str]) -> str:
    """``"wasi"``, ``"memory"`` or ``""`` (with a problem added for what is wrong)."""
    if "_start" in functions:
        if functions["_start"] != _SIG_VOID:
            problems.append("_start must take no parameters and return nothing")
        return "wasi"
    if "alloc" in functions and "memory" in memories:
        return "memory"
    problems.append("exports neither _start (WASI command ABI) nor memory + alloc (memory ABI)")
    return ""


def sig_text(sig: Signature) -> str:
    """``(i32, i32) -> (i64)``."""
    params, results = sig
    return f"({', '.join(params)}) -> ({', '.join(results)})"
