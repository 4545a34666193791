"""The Flink job and its cluster: job parameters, the JobManager's REST API, how the job was submitted."""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

__all__ = ['JOB_KEY', 'REPORT_KEY', 'REST_KEY', 'CompletedCheckpoints', 'attached', 'error_text', 'flink_parallelism', 'job_end', 'python_traceback', 'rest_url', 'restore_path', 'submitted_by_flink_cli']


#: the job parameter that holds what ``adf flink status`` needs to finish a detached run
REPORT_KEY = "adf.report"


#: the job parameters with the JobManager's REST URL and the job's name (checkpoint-gated acks)
REST_KEY, JOB_KEY = "adf.rest", "adf.job"


class CompletedCheckpoints:
    """When the job's latest completed checkpoint was triggered (epoch seconds, JobManager
    clock), from the REST API, asked at most twice a second; 0 while none completed or the API
    does not answer (nothing is acknowledged then: entries stay pending, read again after a
    restart)."""

    def __init__(self, rest: str, job_name: str) -> None:
        self.rest, self.job_name = rest.rstrip("/"), job_name
        self.job_id: str | None = None
        self.trigger = 0.0
        self.asked = 0.0

    def _get(self, path: str) -> Any:
        import urllib.request

        with urllib.request.urlopen(self.rest + path, timeout=5) as r:
            return json.loads(r.read())

    def latest(self) -> float:
        now = time.monotonic()
        if now - self.asked < 0.5:
            return self.trigger
        self.asked = now
        try:
            if self.job_id is None:
                jobs = [j for j in self._get("/jobs/overview").get("jobs", [])
                        if j.get("name") == self.job_name and j.get("state") == "RUNNING"]
                if not jobs:
                    return self.trigger
                self.job_id = str(jobs[0]["jid"])
            completed = ((self._get(f"/jobs/{self.job_id}/checkpoints").get("latest") or {}).get("completed") or {})
            if completed.get("trigger_timestamp"):
                self.trigger = max(self.trigger, float(completed["trigger_timestamp"]) / 1000)
        except (OSError, ValueError, KeyError):
            pass
        return self.trigger


def submitted_by_flink_cli() -> bool:
    """Whether this process is the client of ``flink run -py`` (whose Python driver hands it the
    gateway's port), as opposed to ``python -m active_data_flow.flink_job.job`` starting a local mini-cluster."""
    return "PYFLINK_GATEWAY_PORT" in os.environ


def flink_parallelism() -> int | None:
    """The parallelism ``flink run`` gives the job (``-p``, else the cluster's default)."""
    try:
        from pyflink.datastream import StreamExecutionEnvironment

        value = int(StreamExecutionEnvironment.get_execution_environment().get_parallelism())
    except Exception:
        return None
    return value if value > 0 else None


def attached() -> bool:
    """False when the job is submitted detached (``flink run -d``)."""
    try:
        from pyflink.datastream import StreamExecutionEnvironment
        from pyflink.java_gateway import get_gateway

        env = StreamExecutionEnvironment.get_execution_environment()
        options = get_gateway().jvm.org.apache.flink.configuration.DeploymentOptions
        return bool(env._j_stream_execution_environment.getConfiguration().get(options.ATTACHED))
    except Exception:
        return True


def restore_path() -> str | None:
    """The savepoint or checkpoint ``flink run -s PATH`` restores the job from (None: a new run)."""
    try:
        from pyflink.datastream import StreamExecutionEnvironment
        from pyflink.java_gateway import get_gateway

        env = StreamExecutionEnvironment.get_execution_environment()
        options = get_gateway().jvm.org.apache.flink.configuration.StateRecoveryOptions
        value = env._j_stream_execution_environment.getConfiguration().get(options.SAVEPOINT_PATH)
    except Exception:
        return None
    return str(value) if value else None


def python_traceback(text: str) -> str | None:
    """The Python traceback inside a Java exception's text (a worker's error as the client gets
    it: a ``Py4JJavaError`` whose causes hold the worker's traceback), or None."""
    start = text.rfind("Traceback (most recent call last):")
    if start < 0:
        return None
    lines: list[str] = []
    for line in text[start:].splitlines():
        if line.startswith(("\tat ", "\t... ", "Caused by:")):
            break
        lines.append(line)
    while lines and not lines[-1].strip():
        lines.pop()
    return "\n".join(lines) if lines else None


def rest_url() -> str | None:
    """The JobManager's REST URL from the configuration ``flink run`` uses."""
    try:
        from pyflink.datastream import StreamExecutionEnvironment
        from pyflink.java_gateway import get_gateway

        conf = StreamExecutionEnvironment.get_execution_environment()._j_stream_execution_environment.getConfiguration()
        options = get_gateway().jvm.org.apache.flink.configuration.RestOptions
        host = conf.get(options.ADDRESS) or "localhost"
        return f"http://{host}:{int(conf.get(options.PORT))}"
    except Exception:
        return None


def job_end(job_name: str, timeout: float = 600) -> str | None:
    """After the job failed (or its collection broke off): wait for its end on the REST API and
    describe it — how often it restarted, its final state and the Python traceback of the failure."""
    import urllib.request

    rest = rest_url()
    if rest is None:
        return None

    def get(path: str) -> Any:
        with urllib.request.urlopen(rest + path, timeout=10) as r:
            return json.loads(r.read())

    try:
        jobs = [j for j in get("/jobs/overview").get("jobs", []) if j.get("name") == job_name]
        if not jobs:
            return None
        job_id = jobs[0]["jid"]
        deadline = time.monotonic() + timeout
        state = jobs[0].get("state")
        while state not in ("FINISHED", "FAILED", "CANCELED") and time.monotonic() < deadline:
            time.sleep(1)
            state = get(f"/jobs/{job_id}").get("state")
        history = get(f"/jobs/{job_id}/exceptions").get("exceptionHistory", {}).get("entries") or []
    except OSError:
        return None
    cause = None
    for entry in history:
        tb = python_traceback(entry.get("stacktrace") or "")
        if tb is not None:
            last = [ln for ln in tb.splitlines() if ln.strip() and not ln.startswith(" ")]
            cause = last[-1].strip() if last else None
            break
        cause = cause or (entry.get("exceptionName") or "") + ": " + (entry.get("stacktrace") or "").split("\n")[0]
    restarts = max(0, len(history) - (state == "FAILED"))
    return f"job {job_id} restarted {restarts} times ({cause or 'cause unknown'}) and ended {state}"


def error_text(exc: BaseException) -> str:
    """One line saying why the job failed: the worker's Python exception when there is one."""
    text = str(exc)
    tb = python_traceback(text)
    if tb is not None:
        sys.stderr.write("adf: the job failed in a Python worker:\n" + tb + "\n")
        last = [ln for ln in tb.splitlines() if ln.strip() and not ln.startswith(" ")]
        return last[-1].strip() if last else tb.splitlines()[-1].strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"
