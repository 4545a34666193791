"""Random identifiers: request, run, error and lease ids.

Standard library only. ``uuid.uuid4().hex`` would do, but importing ``uuid`` imports
``platform`` (and compiles its regular expressions): a few milliseconds of every Lambda cold
start and of every Spin component's snapshot, for ids that are only ever compared as text.
"""

from __future__ import annotations

import os

__all__ = ["new_id"]


def new_id(length: int = 32) -> str:
    """``length`` random hexadecimal digits (32, the default, is as many as a UUID has)."""
    return os.urandom((length + 1) // 2).hex()[:length]
