"""Guest module toolchains: ``adf wasm init`` (a project from a template) and ``adf wasm build``.

A guest project is a directory with an ``adf-wasm.json`` (``{"name", "lang", "example",
"function"}``) and the sources of one template under ``templates/<lang>/``: the ABI side
(``alloc``/``dealloc`` exports, a small JSON parser and serializer, the ``adf`` host-function
imports) and one example step (``transform``, ``validate``, ``route`` or ``context``) as the
main file, exported as ``run``. Every module built here imports nothing but ``adf``.

=================  ==========================================================================
lang               toolchain and command
=================  ==========================================================================
``rust``           Debian ``/usr/bin/rustc`` (1.63) with ``libstd-rust-dev-wasm32`` and ``lld``:
                   ``rustc --edition 2021 --target wasm32-unknown-unknown --crate-type cdylib
                   -O -C strip=debuginfo --crate-name NAME -o OUT src/lib.rs``
``c``              ``clang`` + ``lld`` + ``wasi-libc`` + ``libclang-rt-dev-wasm32``:
                   ``clang --target=wasm32-wasi -O2 -std=c11 -Wall -Wextra -nostartfiles
                   -Wl,--no-entry -Wl,--strip-debug -o OUT main.c adf.c``
``assemblyscript`` ``node_modules/.bin/asc`` (npm ``assemblyscript``) and ``node``:
                   ``asc assembly/index.ts --config asconfig.json --target release
                   --outFile OUT``
``tinygo``         ``tinygo`` >= 0.34 on PATH (optional, not a Debian package):
                   ``tinygo build -buildmode=c-shared -target=wasm-unknown -no-debug
                   -panic=trap -scheduler=none -gc=conservative -o OUT .``
=================  ==========================================================================

``scripts/wasm-setup`` installs the Debian packages and the npm compiler. Rust targets
``wasm32-unknown-unknown`` rather than ``wasm32-wasi``: the same Debian package ships both, and
the WASI standard library links ``fd_write``/``environ_get``/``proc_exit`` imports that a host
offering only ``adf`` cannot satisfy.

Standard library only; ``python -m active_data_flow.wasm.toolchain`` prints the toolchains found.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from active_data_flow.errors import AdfError

__all__ = [
    "DEFAULT_FUNCTION",
    "EXAMPLES",
    "LANGS",
    "PROJECT_FILE",
    "BuildFailed",
    "ProjectError",
    "ToolchainError",
    "ToolchainNotFound",
    "build_command",
    "build_project",
    "find_toolchain",
    "find_toolchains",
    "init_project",
    "read_project",
    "register",
    "toolchain_version",
]

LANGS = ("rust", "c", "assemblyscript", "tinygo")
EXAMPLES = ("transform", "validate", "route", "context")
DEFAULT_FUNCTION = "run"
PROJECT_FILE = "adf-wasm.json"
SETUP_SCRIPT = "scripts/wasm-setup"

TEMPLATES = Path(__file__).resolve().parent / "templates"
#: the ActiveDataFlow checkout (where package.json pins assemblyscript)
REPO_ROOT = Path(__file__).resolve().parents[2]

RUST_TARGET = "wasm32-unknown-unknown"
C_TARGET = "wasm32-wasi"
ASSEMBLYSCRIPT_VERSION = "0.28.20"
BUILD_TIMEOUT_S = 600

#: where init puts the chosen example (``templates/<lang>/examples/<example>.<ext>``)
_MAIN_FILE = {"rust": "src/lib.rs", "c": "main.c", "assemblyscript": "assembly/index.ts", "tinygo": "main.go"}
_EXAMPLE_EXT = {"rust": ".rs", "c": ".c", "assemblyscript": ".ts", "tinygo": ".go"}
_GITIGNORE = {"assemblyscript": "build/\nnode_modules/\n"}

#: what each toolchain needs, and how to get it
_NEEDS = {
    "rust": (f"/usr/bin/rustc with the {RUST_TARGET} standard library and rust-lld",
             "apt-get install rustc libstd-rust-dev-wasm32 lld"),
    "c": (f"clang with the {C_TARGET} sysroot (wasi-libc), the wasm32 compiler-rt and wasm-ld",
          "apt-get install clang lld wasi-libc libclang-rt-dev-wasm32"),
    "assemblyscript": ("node_modules/.bin/asc (npm package assemblyscript) and node",
                       f"npm install (assemblyscript {ASSEMBLYSCRIPT_VERSION} is in package.json)"),
    "tinygo": ("tinygo (0.34 or later) on PATH",
               "TinyGo is not a Debian package: install a release from tinygo.org and put tinygo on PATH"),
}

_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")


class ToolchainError(AdfError):
    """Base of what ``init_project``/``build_project`` raise."""


class ProjectError(ToolchainError):
    """An invalid project: a bad name, language or example, an existing directory, a missing or
    malformed ``adf-wasm.json``."""


class ToolchainNotFound(ToolchainError):
    """The language's toolchain is not installed; the message says what to install."""

    def __init__(self, lang: str) -> None:
        need, install = _NEEDS[lang]
        hint = f"run {SETUP_SCRIPT}" if lang != "tinygo" else "scripts/wasm-setup does not install it"
        super().__init__(f"no {lang} toolchain found: needs {need}; {install} ({hint})")
        self.lang = lang


class BuildFailed(ToolchainError):
    """The compiler failed: ``command`` is what ran, ``output`` what it printed."""

    def __init__(self, lang: str, command: Sequence[str], output: str, returncode: int | None) -> None:
        status = f"exit code {returncode}" if returncode is not None else "timed out"
        super().__init__(f"{lang} build failed ({status}): {shlex.join(command)}\n{output.rstrip()}")
        self.lang = lang
        self.command = list(command)
        self.output = output
        self.returncode = returncode


# --------------------------------------------------------------------------- finding toolchains


def _run(cmd: Sequence[str], timeout: float = 30) -> str | None:
    """stdout of a quick probe command, or None when it cannot run or fails."""
    try:
        proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def _executable(path: str | Path | None) -> str | None:
    if not path:
        return None
    p = Path(path)
    return str(p) if p.is_file() and os.access(p, os.X_OK) else None


def _find_rust(project: Path | None = None) -> str | None:
    candidates = [os.environ.get("ADF_RUSTC"), "/usr/bin/rustc", shutil.which("rustc")]
    for cand in dict.fromkeys(c for c in candidates if c):
        rustc = _executable(cand)
        sysroot = _run([rustc, "--print", "sysroot"]) if rustc else None
        if not rustc or not sysroot:
            continue
        libdir = Path(sysroot) / "lib" / "rustlib" / RUST_TARGET / "lib"
        if not any(libdir.glob("libstd-*.rlib")):
            continue
        bundled = list((Path(sysroot) / "lib" / "rustlib").glob("*/bin/rust-lld"))
        if shutil.which("rust-lld") or any(_executable(b) for b in bundled):
            return rustc
    return None


def _c_sysroot() -> str | None:
    """``""`` when clang's default WASI sysroot (Debian's wasi-libc) is there, a path for
    ``--sysroot`` (``$WASI_SYSROOT``, wasi-sdk's), or None when there is none."""
    env = os.environ.get("WASI_SYSROOT")
    candidates = [env] if env else []
    candidates += ["/usr/share/wasi-sysroot", "/opt/wasi-sdk/share/wasi-sysroot"]
    for cand in candidates:
        if cand and (Path(cand) / "lib" / C_TARGET / "libc.a").is_file():
            return cand
    if (Path("/usr/lib") / C_TARGET / "libc.a").is_file() and (Path("/usr/include") / C_TARGET / "stdlib.h").is_file():
        return ""
    return None


def _find_c(project: Path | None = None) -> str | None:
    clang = _executable(os.environ.get("ADF_CLANG")) or shutil.which("clang")
    if not clang or _c_sysroot() is None:
        return None
    builtins = _run([clang, f"--target={C_TARGET}", "-print-libgcc-file-name"])
    if not builtins or not Path(builtins).is_file():
        return None
    linker = _run([clang, f"--target={C_TARGET}", "-print-prog-name=wasm-ld"])
    if not linker or not (_executable(linker) or shutil.which(linker)):
        return None
    return clang


def _find_asc(project: Path | None = None) -> str | None:
    if not shutil.which("node"):
        return None
    roots: list[Path] = []
    if project is not None:
        roots += [project, *project.parents]
    roots.append(REPO_ROOT)
    for root in dict.fromkeys(roots):
        found = _executable(root / "node_modules" / ".bin" / "asc")
        if found:
            return found
    return shutil.which("asc")


def _find_tinygo(project: Path | None = None) -> str | None:
    return shutil.which("tinygo")


_FINDERS: dict[str, Callable[[Path | None], str | None]] = {
    "rust": _find_rust,
    "c": _find_c,
    "assemblyscript": _find_asc,
    "tinygo": _find_tinygo,
}


def find_toolchain(lang: str, project: str | Path | None = None) -> str | None:
    """The compiler used for ``lang`` (a path), or None when it (or what it needs) is missing.
    ``project``: a project directory, whose own ``node_modules`` is searched first for asc."""
    if lang not in LANGS:
        raise ProjectError(f"unknown language {lang!r}; one of {', '.join(LANGS)}")
    return _FINDERS[lang](Path(project).resolve() if project is not None else None)


def find_toolchains(project: str | Path | None = None) -> dict[str, str | None]:
    """The compiler for each of :data:`LANGS`: its path, or None when not usable here."""
    return {lang: find_toolchain(lang, project) for lang in LANGS}


def toolchain_version(lang: str, tool: str) -> str | None:
    """The first line ``tool`` prints about its version (None when it cannot say)."""
    args = {"tinygo": [tool, "version"]}.get(lang, [tool, "--version"])
    out = _run(args)
    return out.splitlines()[0] if out else None


# --------------------------------------------------------------------------- projects


def _placeholders(name: str) -> dict[str, str]:
    crate = re.sub(r"[^A-Za-z0-9_]", "_", name)
    return {"{{name}}": name, "{{crate}}": crate, "{{slug}}": name.lower(),
            "{{asc_version}}": ASSEMBLYSCRIPT_VERSION}


def _render(text: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        text = text.replace(key, value)
    return text


def init_project(lang: str, name: str, dest: str | Path, example: str = "transform") -> Path:
    """Create the project ``dest/name`` from the ``lang`` template with ``example`` as its step
    (exported as ``run``) and an ``adf-wasm.json``; returns the project directory."""
    if lang not in LANGS:
        raise ProjectError(f"unknown language {lang!r}; one of {', '.join(LANGS)}")
    if example not in EXAMPLES:
        raise ProjectError(f"unknown example {example!r}; one of {', '.join(EXAMPLES)}")
    if not _NAME_RE.match(name):
        raise ProjectError(f"invalid module name {name!r}: a letter, then letters, digits, '-' or '_' (64 at most)")
    project = Path(dest) / name
    if project.exists() and (not project.is_dir() or any(project.iterdir())):
        raise ProjectError(f"{project} already exists and is not empty")
    template = TEMPLATES / lang
    values = _placeholders(name)
    project.mkdir(parents=True, exist_ok=True)
    for src in sorted(template.rglob("*")):
        rel = src.relative_to(template)
        if src.is_dir() or rel.parts[0] == "examples" or "__pycache__" in rel.parts:
            continue
        target = project / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(_render(src.read_text(encoding="utf-8"), values), encoding="utf-8")
    main = project / _MAIN_FILE[lang]
    main.parent.mkdir(parents=True, exist_ok=True)
    example_src = template / "examples" / f"{example}{_EXAMPLE_EXT[lang]}"
    main.write_text(_render(example_src.read_text(encoding="utf-8"), values), encoding="utf-8")
    (project / ".gitignore").write_text(_GITIGNORE.get(lang, "build/\n"), encoding="utf-8")
    meta = {"name": name, "lang": lang, "example": example, "function": DEFAULT_FUNCTION}
    (project / PROJECT_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return project


def read_project(path: str | Path) -> dict[str, str]:
    """The checked ``adf-wasm.json`` of the project at ``path``."""
    file = Path(path) / PROJECT_FILE
    try:
        meta = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ProjectError(f"{file} not found: not a guest module project (create one with `adf wasm init`)") from None
    except (OSError, ValueError) as exc:
        raise ProjectError(f"cannot read {file}: {exc}") from exc
    if not isinstance(meta, dict):
        raise ProjectError(f"{file}: expected a JSON object")
    problems = []
    if meta.get("lang") not in LANGS:
        problems.append(f"lang must be one of {', '.join(LANGS)} (got {meta.get('lang')!r})")
    if not isinstance(meta.get("name"), str) or not _NAME_RE.match(meta["name"]):
        problems.append(f"name must be a module name (got {meta.get('name')!r})")
    if problems:
        raise ProjectError(f"{file}: " + "; ".join(problems))
    meta.setdefault("function", DEFAULT_FUNCTION)
    return {k: str(v) for k, v in meta.items()}


def build_command(lang: str, tool: str, name: str, out: Path) -> list[str]:
    """The command line (run in the project directory) that builds ``out``."""
    if lang == "rust":
        crate = re.sub(r"[^A-Za-z0-9_]", "_", name)
        return [tool, "--edition", "2021", "--target", RUST_TARGET, "--crate-type", "cdylib", "-O",
                "-C", "strip=debuginfo", "--crate-name", crate, "-o", str(out), "src/lib.rs"]
    if lang == "c":
        sysroot = _c_sysroot()
        return [tool, f"--target={C_TARGET}", *([f"--sysroot={sysroot}"] if sysroot else []),
                "-O2", "-std=c11", "-Wall", "-Wextra", "-nostartfiles", "-Wl,--no-entry", "-Wl,--strip-debug",
                "-o", str(out), "main.c", "adf.c"]
    if lang == "assemblyscript":
        return [tool, "assembly/index.ts", "--config", "asconfig.json", "--target", "release",
                "--outFile", str(out)]
    if lang == "tinygo":
        return [tool, "build", "-buildmode=c-shared", "-target=wasm-unknown", "-no-debug", "-panic=trap",
                "-scheduler=none", "-gc=conservative", "-o", str(out), "."]
    raise ProjectError(f"unknown language {lang!r}; one of {', '.join(LANGS)}")


def build_project(path: str | Path = ".", *, out: str | Path | None = None) -> Path:
    """Compile the project at ``path`` to ``out`` (default ``build/<name>.wasm`` inside it) and
    return the ``.wasm`` path. Raises :class:`ToolchainNotFound` when the compiler is missing and
    :class:`BuildFailed` (with the compiler's output) when it fails."""
    project = Path(path).resolve()
    meta = read_project(project)
    lang, name = meta["lang"], meta["name"]
    tool = find_toolchain(lang, project)
    if tool is None:
        raise ToolchainNotFound(lang)
    target = Path(out).resolve() if out is not None else project / "build" / f"{name}.wasm"
    target.parent.mkdir(parents=True, exist_ok=True)
    cmd = build_command(lang, tool, name, target)
    try:
        proc = subprocess.run(cmd, cwd=project, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S,
                              check=False)
    except subprocess.TimeoutExpired as exc:
        output = exc.stdout if isinstance(exc.stdout, str) else ""
        raise BuildFailed(lang, cmd, output, None) from None
    except OSError as exc:
        raise BuildFailed(lang, cmd, str(exc), 127) from exc
    output = (proc.stdout or "") + (proc.stderr or "")
    if proc.returncode != 0 or not target.is_file():
        raise BuildFailed(lang, cmd, output or "(no output, no module written)", proc.returncode)
    return target


# --------------------------------------------------------------------------- command line


def _err(message: str) -> None:
    print(f"adf: {message}", file=sys.stderr)


def _cmd_init(args: argparse.Namespace) -> int:
    try:
        project = init_project(args.lang, args.name, args.dir, example=args.example)
    except ToolchainError as exc:
        _err(str(exc))
        return 2
    print(f"created {project} ({args.lang}, example {args.example}, function {DEFAULT_FUNCTION})")
    tool = find_toolchain(args.lang, project)
    if tool is None:
        print(f"note: {ToolchainNotFound(args.lang)}", file=sys.stderr)
    print(f"build it with: adf wasm build {project}")
    return 0


def _cmd_build(args: argparse.Namespace) -> int:
    try:
        wasm = build_project(args.path, out=args.out)
    except ToolchainNotFound as exc:
        _err(str(exc))
        return 127
    except BuildFailed as exc:
        _err(str(exc))
        return 1
    except ToolchainError as exc:
        _err(str(exc))
        return 2
    print(f"{wasm} ({wasm.stat().st_size:,} bytes)")
    return 0


def register(wasm_subparsers: Any) -> None:
    """Add ``init`` and ``build`` to the ``adf wasm`` sub-command parsers."""
    init = wasm_subparsers.add_parser(
        "init", help="create a guest module project from a template",
        description="Create DIR/NAME: a guest module project (the ABI side, a JSON parser/serializer, "
                    "the adf host imports) with one example step exported as `run`.")
    init.add_argument("name", metavar="NAME", help="module name (the directory and the .wasm file)")
    init.add_argument("--lang", required=True, choices=LANGS, help="the guest language")
    init.add_argument("--example", default="transform", choices=EXAMPLES,
                      help="the step to start from (default: transform)")
    init.add_argument("--dir", default=".", help="where to create the project directory (default: .)")
    init.set_defaults(func=_cmd_init)

    build = wasm_subparsers.add_parser(
        "build", help="compile a guest module project to .wasm",
        description="Compile the project (its adf-wasm.json says the language) and print the module's "
                    "path and size. Exit codes: 0 built, 1 the compiler failed, 2 not a project, "
                    f"127 the toolchain is missing ({SETUP_SCRIPT} installs it).")
    build.add_argument("path", nargs="?", default=".", metavar="PATH", help="the project directory (default: .)")
    build.add_argument("--out", metavar="FILE", help="where to write the module (default: PATH/build/NAME.wasm)")
    build.set_defaults(func=_cmd_build)


def main(argv: Sequence[str] | None = None) -> int:
    """Print each language's toolchain and version (``python -m active_data_flow.wasm.toolchain``); exit 1
    when one of rust, c, assemblyscript is missing."""
    argparse.ArgumentParser(description="Show the guest module toolchains found.").parse_args(argv)
    missing = []
    for lang, tool in find_toolchains().items():
        if tool is None:
            print(f"{lang:<15} missing: {ToolchainNotFound(lang)}")
            if lang != "tinygo":
                missing.append(lang)
        else:
            print(f"{lang:<15} {tool} ({toolchain_version(lang, tool) or 'version unknown'})")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
