"""A step module that imports on the client but not in a Flink Python worker (whose main
module is PyFlink's ``beam_boot``): the job fails in the worker's ``open()``."""

import sys

_main = getattr(sys.modules.get("__main__"), "__spec__", None)
if _main is not None and "beam_boot" in (_main.name or ""):
    raise RuntimeError("this module refuses to load in a Flink worker (on purpose)")


def same(record):  # type: ignore[no-untyped-def]
    return record
