"""The import package ``active_data_flow`` laid out as a wheel installs it, for what cannot use
the editable install's import hook: interpreters without site-packages (``python -S``) and
mypy (``scripts/typecheck``).

core/ is the package itself and the host folders are its subpackages; the tree is made of
symlinks into the checkout. ``python tests/package_tree.py DIR`` lays it out in DIR."""

from __future__ import annotations

import atexit
import functools
import shutil
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: folder -> its import name, as pyproject.toml's [tool.setuptools.package-dir] maps them
with (ROOT / "pyproject.toml").open("rb") as _f:
    IMPORT_NAMES: dict[str, str] = {folder: name for name, folder in
                                    tomllib.load(_f)["tool"]["setuptools"]["package-dir"].items()}
#: folder -> its place inside the package directory ("" for the package itself)
FOLDERS = {folder: name.removeprefix("active_data_flow").lstrip(".").replace(".", "/")
           for folder, name in IMPORT_NAMES.items()}


def lay_out(parent: Path) -> Path:
    """``parent/active_data_flow``, made of symlinks into the checkout; returns ``parent``."""
    package = parent / "active_data_flow"
    package.mkdir(parents=True)
    for entry in (ROOT / "core").iterdir():
        if entry.name != "__pycache__":
            (package / entry.name).symlink_to(entry)
    for folder, place in FOLDERS.items():
        if place:
            (package / place).symlink_to(ROOT / folder)
    return parent


@functools.cache
def package_parent() -> Path:
    """A directory to put on ``sys.path`` (it holds ``active_data_flow``), once per process."""
    parent = Path(tempfile.mkdtemp(prefix="adf-package-"))
    atexit.register(shutil.rmtree, parent, ignore_errors=True)
    return lay_out(parent)


if __name__ == "__main__":
    print(lay_out(Path(sys.argv[1])))
