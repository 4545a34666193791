"""A standalone Flink cluster on loopback, started from the apache-flink wheel's own scripts.

    with FlinkCluster(taskmanagers=2) as cluster:      # JobManager + 2 TaskManagers
        cluster.flink("run", "-py", "job.py", ...)      # the wheel's `flink` CLI, aimed at it
        cluster.kill_taskmanager(0)                     # SIGKILL the JVM
        cluster.add_taskmanager()                       # a replacement

Every process runs in the foreground of its own process group (``jobmanager.sh start-foreground``
execs the JVM, so the child's pid is the JVM's), with a configuration directory, log
directory and pid directory of its own; the ports are free ones. :meth:`stop` kills what
:meth:`start` started, by process group, and is called on ``__exit__`` (a failing test too).

``private=True`` runs each TaskManager under ``unshare --mount`` with an empty tmpfs on
``/tmp`` and a working directory of its own: a job can then read only what is on the
shared filesystem (not the client's ``/tmp``, where pytest's ``tmp_path`` lives). The cluster's
own directory is therefore not under ``/tmp`` (``/var/tmp`` by default); a project checked out
under ``/tmp`` is bound back into the TaskManager's view, at its own path.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FLINK_VENV = ROOT / ".venv-flink"
PYFLINK = FLINK_VENV / "lib" / "python3.11" / "site-packages" / "pyflink"
FLINK_PYTHON = str(FLINK_VENV / "bin" / "python")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def unshare_works() -> bool:
    """Whether this host lets us run a process with a private mount namespace (root, no seccomp ban)."""
    if not shutil.which("unshare"):
        return False
    r = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                        "mount -t tmpfs tmpfs /tmp && test -z \"$(ls -A /tmp)\""], capture_output=True, timeout=20)
    return r.returncode == 0


def _java_opts(config: Path) -> str:
    for line in config.read_text().splitlines():
        if line.strip().startswith("all:"):
            return line.split("all:", 1)[1].strip()
    return ""


def _yaml(values: dict[str, Any]) -> str:
    # flat "key: value" lines: Flink's config.yaml accepts dotted keys
    return "".join(f"{k}: {json.dumps(v) if isinstance(v, str) else v}\n" for k, v in values.items())


class FlinkCluster:
    def __init__(self, taskmanagers: int = 2, *, slots: int = 1, private: bool = False,
                 base: str | None = None, extra_conf: dict[str, Any] | None = None) -> None:
        if not (PYFLINK / "bin" / "jobmanager.sh").exists():
            raise RuntimeError("PyFlink is not installed in .venv-flink: run scripts/flink-setup")
        self.n, self.slots, self.private = taskmanagers, slots, private
        self.dir = Path(tempfile.mkdtemp(prefix="adf-flink-cluster-", dir=base or "/var/tmp"))
        self.conf_dir, self.log_dir = self.dir / "conf", self.dir / "log"
        self.rest_port, self.rpc_port = free_port(), free_port()
        self.rest = f"http://127.0.0.1:{self.rest_port}"
        self.jobmanager: subprocess.Popen[bytes] | None = None
        self.taskmanagers: list[subprocess.Popen[bytes]] = []
        self._all: list[subprocess.Popen[bytes]] = []
        #: TaskManagers a test killed (never restarted) and the indexes of those that exited by
        #: themselves and were started again (see _supervise)
        self._killed: set[int] = set()
        self.restarted: list[int] = []
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        shutil.copytree(PYFLINK / "conf", self.conf_dir)
        self.log_dir.mkdir()
        conf = {
            # the JVM options of the wheel's configuration (--add-opens… that Flink 2 needs on Java 17)
            # (and a JVM that dies leaves its crash report with the logs, not on a private /tmp)
            "env.java.opts.all": f"{_java_opts(PYFLINK / 'conf' / 'config.yaml')} "
                                 f"-XX:ErrorFile={self.log_dir}/hs_err_pid%p.log".strip(),
            "jobmanager.rpc.address": "localhost", "jobmanager.bind-host": "localhost",
            "jobmanager.rpc.port": self.rpc_port,
            "rest.address": "localhost", "rest.bind-address": "localhost", "rest.port": self.rest_port,
            "taskmanager.host": "localhost", "taskmanager.bind-host": "localhost",
            "taskmanager.numberOfTaskSlots": slots,
            # small: 2 cores here; the Python workers take managed memory
            "jobmanager.memory.process.size": "900m",
            "taskmanager.memory.process.size": "1200m",
            "taskmanager.memory.managed.fraction": 0.3,
            "parallelism.default": 1,
            "jobmanager.execution.failover-strategy": "region",
            "heartbeat.interval": 1000, "heartbeat.timeout": 6000,
            "pekko.ask.timeout": "30 s",
            "restart-strategy.type": "fixed-delay",
            "restart-strategy.fixed-delay.attempts": 10,  # a replaced TaskManager may take a few on a loaded host
            "restart-strategy.fixed-delay.delay": "2 s",
            "env.pid.dir": str(self.dir / "pid"),
            **(extra_conf or {}),
        }
        (self.conf_dir / "config.yaml").write_text(_yaml(conf))

    # ------------------------------------------------------------------ processes
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYFLINK_", "FLINK_", "_PYTHON"))}
        env.update(FLINK_CONF_DIR=str(self.conf_dir), FLINK_LOG_DIR=str(self.log_dir),
                   FLINK_PID_DIR=str(self.dir / "pid"), FLINK_HOME=str(PYFLINK))
        env["PATH"] = f"{FLINK_VENV / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}"
        return env

    def _spawn(self, what: str, index: int) -> subprocess.Popen[bytes]:
        script = str(PYFLINK / "bin" / f"{what}.sh")
        out = open(self.log_dir / f"{what}-{index}.console", "wb")
        if what == "taskmanager" and self.private:
            work = f"/tmp/tm-{index}"
            # the project (its .venv-flink runs the TaskManager) stays visible where it is, also
            # when it was checked out under /tmp: bound aside, then back over the new tmpfs
            keep = f"{self.dir}/keep-{index}"
            inside = ROOT == Path("/tmp") or Path("/tmp") in ROOT.parents
            setup = (f"mkdir -p {keep} && mount --bind {ROOT} {keep} && mount -t tmpfs tmpfs /tmp && "
                     f"mkdir -p {ROOT} && mount --bind {keep} {ROOT}") if inside else "mount -t tmpfs tmpfs /tmp"
            cmd = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                   f"{setup} && mkdir -p {work} && cd {work} && exec {script} start-foreground"]
        else:
            work_dir = self.dir / f"{what}-{index}"
            work_dir.mkdir(exist_ok=True)
            cmd = [script, "start-foreground"]
        proc = subprocess.Popen(cmd, env=self.env(), stdout=out, stderr=subprocess.STDOUT,
                                cwd=None if self.private and what == "taskmanager" else str(self.dir / f"{what}-{index}"),
                                process_group=0)
        out.close()
        self._all.append(proc)
        return proc

    def start(self, timeout: float = 120) -> FlinkCluster:
        try:
            self.jobmanager = self._spawn("jobmanager", 0)
            for i in range(self.n):
                self.taskmanagers.append(self._spawn("taskmanager", i))
            self.wait_for_taskmanagers(self.n, timeout)
        except BaseException:
            self.stop()
            raise
        threading.Thread(target=self._supervise, name="flink-supervisor", daemon=True).start()
        return self

    def _new_taskmanager(self) -> subprocess.Popen[bytes]:
        with self._lock:
            proc = self._spawn("taskmanager", len(self.taskmanagers))
            self.taskmanagers.append(proc)
        return proc

    def _supervise(self) -> None:
        """Start a TaskManager again when it exited by itself, as the supervisor of a real
        deployment (systemd, Kubernetes) does: PyFlink 2.3's Beam runner can take a TaskManager
        down while a failover cancels its tasks — ``IllegalStateException: Reference count must
        not be negative`` in ``DefaultJobBundleFactory.close``, which Flink treats as fatal. A
        TaskManager a test killed is left dead (the test starts its replacement)."""
        while not self._stopping.wait(0.5):
            with self._lock:
                for i, tm in enumerate(list(self.taskmanagers)):
                    if self._stopping.is_set():
                        return
                    if i not in self._killed and i not in self.restarted and tm.poll() is not None:
                        self.restarted.append(i)
                        self._new_taskmanager()

    def add_taskmanager(self, timeout: float = 120) -> subprocess.Popen[bytes]:
        """Start one more TaskManager and wait until the JobManager counts it."""
        # the live TaskManager processes and this one (not the JobManager's count: it still holds
        # a killed TaskManager until its heartbeat times out)
        with self._lock:
            want = sum(1 for tm in self.taskmanagers if tm.poll() is None) + 1
            proc = self._new_taskmanager()
        self.wait_for_taskmanagers(want, timeout)
        return proc

    def kill_taskmanager(self, index: int) -> int:
        """SIGKILL TaskManager ``index``'s JVM (not its Python workers: those are what it left)."""
        self._killed.add(index)
        proc = self.taskmanagers[index]
        pid = self.jvm_pid(proc)
        os.kill(pid, signal.SIGKILL)
        if pid == proc.pid:
            proc.wait(30)
        return pid

    def jvm_pid(self, proc: subprocess.Popen[bytes]) -> int:
        """The JVM of a process this started (``unshare … sh -c exec`` keeps the pid; unshare forks once)."""
        return proc.pid  # `unshare` (no --fork) and `sh -c "exec …"` keep it

    def stop(self) -> None:
        self._stopping.set()
        for proc in reversed(self._all):
            # the whole group, even when its JVM is gone already: the Python workers it started
            # are in it (a killed TaskManager's orphans too)
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        for proc in self._all:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                pass
        # the Python workers of a TaskManager run in its process group: gone too;
        # any left (a worker that ignored the group kill) are found by their cluster directory
        for pid in _pids_mentioning(str(self.dir)):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def cleanup(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> FlinkCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        if exc[0] is None:
            self.cleanup()  # kept after a failure: the logs say why

    # ------------------------------------------------------------------ REST
    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.rest + path, timeout=10) as r:
            return json.loads(r.read())

    def overview(self) -> dict[str, Any]:
        try:
            return dict(self.get("/overview"))
        except OSError:
            return {}

    def wait_for_taskmanagers(self, n: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.jobmanager is not None and self.jobmanager.poll() is not None:
                raise RuntimeError(f"the JobManager exited: {self.logs()[-3000:]}")
            if self.overview().get("taskmanagers", 0) >= n:
                return
            time.sleep(0.5)
        raise TimeoutError(f"{n} TaskManagers not registered after {timeout} s: {self.logs()[-3000:]}")

    def wait_for_taskmanager_loss(self, n: int, timeout: float = 60) -> None:
        """Wait until the JobManager counts at most ``n`` TaskManagers (a REST call that fails
        says nothing: asked again)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.overview().get("taskmanagers", n + 1) > n:
            time.sleep(0.5)

    def logs(self) -> str:
        return "\n".join(f"== {p.name}\n{p.read_text(errors='replace')}" for p in sorted(self.log_dir.iterdir())
                         if p.is_file())

    # ------------------------------------------------------------------ the client
    def flink_cmd(self) -> list[str]:
        return [str(PYFLINK / "bin" / "flink")]

    def flink(self, *args: str, cwd: str | None = None, timeout: float = 600,
              env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """The wheel's ``flink`` CLI against this cluster (``-m`` not needed: the conf dir says where)."""
        return subprocess.run([*self.flink_cmd(), *args], cwd=cwd, env={**self.env(), **(env or {})},
                              capture_output=True, text=True, timeout=timeout)

    def python_workers(self) -> list[int]:
        """Pids of PyFlink Python worker processes (beam boot and SDK workers) on this host."""
        out = []
        for pid in _all_pids():
            cmd = _cmdline(pid)
            if "pyflink.fn_execution" in cmd or "pyflink-udf-runner" in cmd:
                out.append(pid)
        return out


def _all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _children(pid: int) -> list[int]:
    out = []
    for p in _all_pids():
        try:
            stat = Path(f"/proc/{p}/stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            out.append(p)
    return out


def descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        for child in _children(todo.pop()):
            found.append(child)
            todo.append(child)
    return found


def _pids_mentioning(text: str) -> list[int]:
    me = os.getpid()
    return [p for p in _all_pids() if p != me and text in _cmdline(p)]
