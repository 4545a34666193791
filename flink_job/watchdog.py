"""A Python worker stops when its TaskManager is gone.

PyFlink's Python worker (``pyflink.fn_execution.beam.beam_boot``, which runs the SDK harness
in-process) is started by the TaskManager JVM through ``pyflink-udf-runner.sh``: JVM → bash →
python. When the JVM dies (``kill -9``, out of memory, a lost container) nothing tells the
worker: it goes on reading its split and writing its sink — a second writer next to the
job's restarted attempt. So each operator's ``open()`` calls :func:`watch_parent`:

* ``prctl(PR_SET_PDEATHSIG, SIGKILL)`` (Linux, via ctypes): the worker is killed by the
  kernel as soon as its parent process (the runner script) goes;
* a daemon thread that checks every ``interval`` seconds that the nearest ``java`` ancestor
  is still the same process (pid and start time); when it is not, the worker kills itself
  (``SIGKILL``: no ``finally`` blocks, no flush of a half batch).

Only the first call starts the thread; elsewhere than Linux it does nothing.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

__all__ = ["jvm_ancestor", "watch_parent"]

_PR_SET_PDEATHSIG = 1
_started = False
_lock = threading.Lock()


def _stat(pid: int) -> tuple[str, int, str] | None:
    """(comm, parent pid, start time) of ``pid``; None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as f:
            data = f.read()
    except OSError:
        return None
    comm = data[data.index("(") + 1:data.rindex(")")]
    fields = data[data.rindex(")") + 2:].split()
    return comm, int(fields[1]), fields[19]


def jvm_ancestor(pid: int | None = None) -> tuple[int, str] | None:
    """The nearest ancestor of ``pid`` (default: this process) that is a ``java`` process, with
    its start time; None when there is none."""
    current = _stat(pid or os.getpid())
    seen = 0
    while current is not None and current[1] > 1 and seen < 32:
        parent = current[1]
        current = _stat(parent)
        if current is not None and current[0] == "java":
            return parent, current[2]
        seen += 1
    return None


def _die() -> None:
    try:
        parent = os.getppid()
        with open(f"/proc/{parent}/cmdline", "rb") as f:
            if b"pyflink-udf-runner" in f.read():
                os.kill(parent, signal.SIGKILL)  # the runner script (and its `tee`) with us
    except OSError:
        pass
    os.kill(os.getpid(), signal.SIGKILL)


def watch_parent(interval: float = 0.5) -> bool:
    """Make this worker process stop when its TaskManager JVM is gone. True: the watch runs."""
    global _started
    if not sys.platform.startswith("linux") or os.environ.get("ADF_FLINK_NO_WATCHDOG"):
        return False
    with _lock:
        if _started:
            return True
        _started = True
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    found = jvm_ancestor()
    if found is None:
        return False
    jvm, started = found

    def watch() -> None:
        while True:
            time.sleep(interval)
            now = _stat(jvm)
            if now is None or now[2] != started:
                _die()

    threading.Thread(target=watch, name="adf-taskmanager-watch", daemon=True).start()
    return True
