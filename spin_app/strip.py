"""Strip debug information from a WebAssembly component (pure Python, no wasm-tools needed).

Walks the component binary — nested components and every embedded core module — and drops
the custom sections that only debuggers and profilers read (``name``, ``.debug_*``,
``producers``, ``target_features``, ``sourceMappingURL``...). Everything that defines the
component (types, imports, exports, code, data) is copied byte for byte, so the stripped
component behaves exactly as the original; tracebacks from the Python code inside are
unchanged (they come from the bundled Python, not from wasm names).

    python -m active_data_flow.spin_app.strip build/spin/http.wasm [-o out.wasm]
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

__all__ = ["strip_bytes", "strip_file"]

_MAGIC = b"\0asm"
_CORE_VERSION = b"\x01\x00\x00\x00"
_CUSTOM, _CORE_MODULE, _COMPONENT = 0, 1, 4


def _keep_custom(name: str) -> bool:
    # Component-model metadata a host may still read is kept; debug/profiling data is not.
    return name.startswith("component-type") or name in ("dylink.0", "linking") or name.startswith("reloc.")


def _leb(data: bytes | memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _enc_leb(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _walk(data: memoryview, nested: Callable[[int, memoryview], bytes | None]) -> bytes:
    out = bytearray(data[:8])
    pos = 8
    while pos < len(data):
        section_id = data[pos]
        size, start = _leb(data, pos + 1)
        end = start + size
        body = data[start:end]
        replaced: bytes | None
        if section_id == _CUSTOM:
            name_len, name_start = _leb(body, 0)
            name = bytes(body[name_start : name_start + name_len]).decode("utf-8", "replace")
            replaced = b"" if not _keep_custom(name) else None
        else:
            replaced = nested(section_id, body)
        if replaced is None:
            out += data[pos:end]
        elif replaced:
            out.append(section_id)
            out += _enc_leb(len(replaced))
            out += replaced
        pos = end
    return bytes(out)


def _strip(data: memoryview) -> bytes:
    if bytes(data[:4]) != _MAGIC:
        raise ValueError("not a WebAssembly binary")
    is_core = bytes(data[4:8]) == _CORE_VERSION

    def nested(section_id: int, body: memoryview) -> bytes | None:
        if not is_core and section_id in (_CORE_MODULE, _COMPONENT):
            return _strip(body)
        return None

    return _walk(data, nested)


def strip_bytes(wasm: bytes) -> bytes:
    """The component (or core module) without its debug custom sections."""
    return _strip(memoryview(wasm))


def strip_file(src: str, dst: str | None = None) -> tuple[int, int]:
    """Strip ``src`` into ``dst`` (default: in place); returns (size before, size after)."""
    with open(src, "rb") as f:
        data = f.read()
    stripped = strip_bytes(data)
    dst = dst or src
    tmp = f"{dst}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        f.write(stripped)
    os.replace(tmp, dst)
    return len(data), len(stripped)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m active_data_flow.spin_app.strip", description=__doc__.splitlines()[0])
    parser.add_argument("component")
    parser.add_argument("-o", "--output")
    args = parser.parse_args(argv)
    before, after = strip_file(args.component, args.output)
    print(f"{args.output or args.component}: {before / 1e6:.1f} MB -> {after / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
