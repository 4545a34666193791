"""SFTP source and sink against a real OpenSSH server started for the tests.

The module starts ``/usr/sbin/sshd -D -e -f <tmp sshd_config>`` on a free loopback port with a
throwaway host key and a throwaway user key (public-key authentication only, as the user
running the tests), and writes a known_hosts file with the host key. Password authentication
cannot be enabled on that server without giving a system account a password, so the password
path is checked against a small in-process paramiko SSH/SFTP server instead.

Missing OpenSSH or paramiko fails the tests (never skips them): run ``scripts/sftp-setup``.
"""

from __future__ import annotations

import getpass
import io
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from active_data_flow.connectors.file import FileSplit
from active_data_flow.connectors.memory import MemorySink
from active_data_flow.connectors.sftp import SftpAuthError, SftpError, SftpHostKeyError, SftpSink, SftpSource
from active_data_flow.context import RunContext
from active_data_flow.engine import run_flow
from active_data_flow.errors import ConfigError
from active_data_flow.logs import JsonFormatter
from active_data_flow.source import CollectingEnumeratorContext, DetachedReaderContext, ReaderStatus

SSHD = "/usr/sbin/sshd"
SETUP_HINT = "run `bash scripts/sftp-setup` (installs openssh-server and paramiko)"


def _require_tools() -> Any:
    missing = [p for p in (SSHD, shutil.which("ssh-keygen") or "ssh-keygen") if not os.path.exists(p)]
    if missing:
        pytest.fail(f"OpenSSH is not installed ({', '.join(missing)} missing): {SETUP_HINT}", pytrace=False)
    try:
        import paramiko
    except ImportError:
        pytest.fail(f"the Python package paramiko (extra 'sftp') is not installed: {SETUP_HINT}", pytrace=False)
    return paramiko


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _keygen(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "adf-test", "-f", str(path)], check=True)
    return " ".join(path.with_suffix(".pub").read_text().split()[:2])


@dataclass
class Sshd:
    port: int
    user: str
    user_key: Path
    known_hosts: Path
    host_pub: str
    root: Path

    def conn(self, **extra: Any) -> dict[str, Any]:
        return {"type": "sftp", "host": "127.0.0.1", "port": self.port, "username": self.user,
                "private_key": str(self.user_key), "known_hosts": str(self.known_hosts), **extra}


def _wait_for_banner(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"sshd exited with {proc.returncode}: {log.read_text()}\n({SETUP_HINT})", pytrace=False)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                if s.recv(64).startswith(b"SSH-"):
                    return
        except OSError:
            time.sleep(0.1)
    pytest.fail(f"sshd did not answer on port {port}: {log.read_text()}", pytrace=False)


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    _require_tools()
    d = tmp_path_factory.mktemp("sshd")
    host_pub = _keygen(d / "host_key")
    user_pub = _keygen(d / "user_key")
    (d / "authorized_keys").write_text(user_pub + "\n")
    port = _free_port()
    (d / "sshd_config").write_text(
        "\n".join([
            f"Port {port}",
            "ListenAddress 127.0.0.1",
            f"HostKey {d / 'host_key'}",
            f"AuthorizedKeysFile {d / 'authorized_keys'}",
            f"PidFile {d / 'sshd.pid'}",
            "StrictModes no",
            "Subsystem sftp internal-sftp",
            "UsePAM no",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PubkeyAuthentication yes",
            "PermitRootLogin prohibit-password",  # the tests may run as root (a container)
            "",
        ])
    )
    if os.geteuid() == 0 and not os.path.isdir("/run/sshd"):
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation directory
    (d / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_pub}\n")
    log = d / "sshd.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(d / "sshd_config")], stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_for_banner(port, proc, log)
        root = d / "files"
        root.mkdir()
        yield Sshd(port, getpass.getuser(), d / "user_key", d / "known_hosts", host_pub, root)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _splits(source: SftpSource) -> list[FileSplit]:
    enum = source.create_enumerator(CollectingEnumeratorContext())
    enum.start()
    return [FileSplit.from_dict(d) for d in enum.snapshot_state()["pending"]]  # type: ignore[misc]


def _explain(spec_file: Path) -> str:
    """``adf config explain --json`` output (a real process, like a user runs it)."""
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), str(root / "tests")])}
    res = subprocess.run([sys.executable, "-m", "active_data_flow.cli", "config", "explain", str(spec_file), "--json"],
                         cwd=root, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    return res.stdout


# --------------------------------------------------------------------------- source


def test_config_errors() -> None:
    with pytest.raises(ConfigError, match="only the file name may hold wildcards"):
        SftpSource(host="h", path="/data/*/x.csv")
    with pytest.raises(ConfigError, match=r"cannot tell the format of '/data/x\.txt'"):
        SftpSource(host="h", path="/data/x.txt")
    with pytest.raises(ConfigError, match="bad placeholder"):
        SftpSink(host="h", path="/out/{nope}.jsonl")
    with pytest.raises(ConfigError, match="set 'format' to jsonl or csv"):
        SftpSink(host="h", path="/out/x.dat")
    assert {"password", "private_key_data", "passphrase"} <= SftpSource.secret_keys()
    assert {"password", "private_key_data", "passphrase"} <= SftpSink.secret_keys()


def test_reads_a_glob_of_csv_files_one_split_per_file(sshd: Sshd, tmp_path: Path) -> None:
    folder = sshd.root / "in-csv"
    folder.mkdir()
    (folder / "b.csv").write_text("id,name\n3,c\n4,\"d, e\"\n")
    (folder / "a.csv").write_bytes(b"\xef\xbb\xbfid,name\n1,a\n2,\"multi\nline\"\n")
    (folder / "c.csv").write_text("id,name\n5,e\n6\n")  # the short row is a dead letter
    (folder / "notes.txt").write_text("not csv")
    (folder / ".hidden.csv").write_text("id,name\n99,hidden\n")
    source = SftpSource(sshd.conn(path=f"{folder}/*.csv"))
    splits = _splits(source)
    assert [s.path for s in splits] == [f"{folder}/a.csv", f"{folder}/b.csv", f"{folder}/c.csv"]
    assert all(s.format == "csv" and s.end is None for s in splits)
    spec = {"name": "sftp_csv", "source": sshd.conn(path=f"{folder}/*.csv"),
            "sink": {"type": "memory", "name": "sftp_csv"}, "runtime": {"batch_size": 2}}
    summary = run_flow(spec, state_dir=str(tmp_path / "state"))
    assert summary.status == "partial", summary.error
    assert summary.splits == 3 and summary.dead_letters == 1
    assert MemorySink.get("sftp_csv") == [
        {"id": "1", "name": "a"}, {"id": "2", "name": "multi\nline"},
        {"id": "3", "name": "c"}, {"id": "4", "name": "d, e"}, {"id": "5", "name": "e"},
    ]
    assert summary.dead_letter_destination is not None
    letter = json.loads(Path(summary.dead_letter_destination).read_text())
    assert letter["origin"] == {"file": f"{folder}/c.csv", "line": 3, "offset": 12}


def test_listing_files_leaves_no_ssh_thread_behind(sshd: Sshd) -> None:
    """The coordinator lists the files, then forks its readers: no SSH transport thread may be
    running in it then (a fork while that thread holds OpenSSL's lock hangs the reader)."""
    paramiko = _require_tools()
    folder = sshd.root / "in-threads"
    folder.mkdir()
    (folder / "a.jsonl").write_text('{"n": 1}\n')
    for _ in range(5):
        assert [s.path for s in _splits(SftpSource(sshd.conn(path=f"{folder}/*.jsonl")))] == [f"{folder}/a.jsonl"]
        alive = [t for t in threading.enumerate() if isinstance(t, paramiko.Transport)]
        assert alive == []


def test_reads_in_parallel_with_csv_options(sshd: Sshd, tmp_path: Path) -> None:
    folder = sshd.root / "in-tsv"
    folder.mkdir()
    for i in range(4):
        (folder / f"part-{i}.txt").write_text("".join(f"{i}\t{j}\n" for j in range(5)))
    out = tmp_path / "out.jsonl"
    spec = {"name": "sftp_par",
            "source": sshd.conn(path=f"{folder}/part-*.txt", format="csv", header=False, delimiter="\t",
                                columns=["file", "row"]),
            "sink": {"type": "file", "path": str(out)}, "runtime": {"parallelism": 2, "batch_size": 3}}
    summary = run_flow(spec, state_dir=str(tmp_path / "state"))
    assert summary.status == "success", summary.error
    rows = sorted((int(r["file"]), int(r["row"])) for r in map(json.loads, out.read_text().splitlines()))
    assert rows == [(i, j) for i in range(4) for j in range(5)]


def test_streams_a_big_jsonl_file_and_resumes_from_a_snapshot(sshd: Sshd) -> None:
    folder = sshd.root / "in-jsonl"
    folder.mkdir()
    lines = [json.dumps({"id": i, "pad": "x" * 200}) for i in range(12_000)]  # ~2.6 MB: several read windows
    (folder / "big.jsonl").write_text("\n".join(lines) + "\n")
    (folder / "small.json").write_text(json.dumps([{"id": "j1"}, {"id": "j2"}]))
    source = SftpSource(sshd.conn(path=[f"{folder}/big.jsonl", f"{folder}/small.json"]))
    big, small = _splits(source)
    reader = source.create_reader(DetachedReaderContext())
    reader.add_splits([big])
    first = reader.poll_batch(5000).records
    (snap,) = reader.snapshot_state()
    reader.close()
    assert [r["id"] for r in first] == list(range(5000))
    assert isinstance(snap.position, dict) and snap.position["line"] == 5001
    again = source.create_reader(DetachedReaderContext())
    again.add_splits([source.split_from_dict(json.loads(json.dumps(snap.to_dict()))), small])
    again.notify_no_more_splits()
    rest: list[Any] = []
    try:
        for _ in range(100):
            batch = again.poll_batch(4000)
            rest += [r["id"] for r in batch.records]
            if batch.status is ReaderStatus.END_OF_INPUT:
                break
    finally:
        again.close()
    assert rest == [*range(5000, 12_000), "j1", "j2"]


def test_a_bounded_source_with_no_file_is_a_clear_error(sshd: Sshd) -> None:
    source = SftpSource(sshd.conn(path=f"{sshd.root}/nothing-here/*.csv"))
    with pytest.raises(SftpError, match=r"cannot list '.*/nothing-here' on .*@127\.0\.0\.1"):
        _splits(source)
    (sshd.root / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"no files match '.*/empty/\*\.csv' on .*@127\.0\.0\.1"):
        _splits(SftpSource(sshd.conn(path=f"{sshd.root}/empty/*.csv")))


# --------------------------------------------------------------------------- host keys and auth


def test_a_wrong_host_key_is_refused(sshd: Sshd, tmp_path: Path) -> None:
    other = _keygen(tmp_path / "other_host_key")
    wrong = tmp_path / "known_hosts_wrong"
    wrong.write_text(f"[127.0.0.1]:{sshd.port} {other}\n")
    (sshd.root / "hk").mkdir()
    (sshd.root / "hk" / "a.jsonl").write_text('{"id": 1}\n')
    source = SftpSource(sshd.conn(path=f"{sshd.root}/hk/*.jsonl", known_hosts=str(wrong)))
    with pytest.raises(SftpHostKeyError) as info:
        _splits(source)
    message = str(info.value)
    assert "host key verification failed for [127.0.0.1]:" in message
    assert "refusing to connect" in message and "ssh-keygen -R" in message
    assert "ssh-ed25519 SHA256:" in message
    # through the engine: the run fails with that error
    spec = {"name": "hk", "source": sshd.conn(path=f"{sshd.root}/hk/*.jsonl", known_hosts=str(wrong)),
            "sink": {"type": "memory", "name": "hk"}}
    summary = run_flow(spec, state_dir=str(tmp_path / "state"))
    assert summary.status == "failed" and summary.error_type == "SftpHostKeyError"


def test_an_unknown_host_key_is_refused_unless_checking_is_off(sshd: Sshd, tmp_path: Path) -> None:
    (sshd.root / "unk").mkdir()
    (sshd.root / "unk" / "a.jsonl").write_text('{"id": 1}\n')
    missing = tmp_path / "no_known_hosts"
    with pytest.raises(SftpHostKeyError, match=r"is not in .*no_known_hosts \(the file does not exist\)") as info:
        _splits(SftpSource(sshd.conn(path=f"{sshd.root}/unk/*.jsonl", known_hosts=str(missing))))
    assert f"ssh-keyscan -p {sshd.port} 127.0.0.1" in str(info.value)
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    with pytest.raises(SftpHostKeyError, match="not in"):
        _splits(SftpSource(sshd.conn(path=f"{sshd.root}/unk/*.jsonl", known_hosts=str(empty))))
    lax = SftpSource(sshd.conn(path=f"{sshd.root}/unk/*.jsonl", known_hosts=str(missing), host_key_checking=False))
    assert list(lax.each()) == [{"id": 1}]


def test_private_key_data_and_a_refused_password_stay_secret(
    sshd: Sshd, tmp_path: Path
) -> None:
    (sshd.root / "kd").mkdir()
    (sshd.root / "kd" / "a.jsonl").write_text('{"id": 1}\n')
    key_text = sshd.user_key.read_text()
    conn = sshd.conn(path=f"{sshd.root}/kd/*.jsonl")
    del conn["private_key"]
    assert list(SftpSource({**conn, "private_key_data": key_text}).each()) == [{"id": 1}]
    password = "n0t-the-pa55word"
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("adf")
    old = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    spec: dict[str, Any] = {"name": "pw", "source": {**conn, "password": password},
            "sink": {"type": "sftp", **{k: v for k, v in conn.items() if k not in ("type", "path")},
                     "password": password, "path": f"{sshd.root}/kd/out.jsonl"}}
    try:
        summary = run_flow(spec, state_dir=str(tmp_path / "state"))
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)
    assert summary.status == "failed" and summary.error_type == "SftpAuthError"
    assert "refused the password" in (summary.error or "")
    written = (tmp_path / "state" / "pw" / "runs" / summary.run_id / "summary.json").read_text()
    for text in (stream.getvalue(), json.dumps(summary.to_dict()), written):
        assert password not in text
    spec_file = tmp_path / "flow.json"
    spec_file.write_text(json.dumps({**spec, "source": {**spec["source"], "private_key_data": key_text}}))
    shown = _explain(spec_file)
    assert "source.host" in shown
    assert password not in shown and "PRIVATE KEY" not in shown


# --------------------------------------------------------------------------- sink


def _sink(sshd: Sshd, path: str, run_id: str = "r1", state_dir: str = "/nonexistent", **kw: Any) -> SftpSink:
    conn = sshd.conn()
    del conn["type"]
    sink = SftpSink({**conn, "path": path, **kw})
    sink.run_context = RunContext(flow_name="f", run_id=run_id, state_dir=state_dir)
    return sink


def test_sink_writes_jsonl_atomically_through_a_temporary_file(sshd: Sshd, tmp_path: Path) -> None:
    out = sshd.root / "out-direct"
    sink = _sink(sshd, f"{out}/orders-{{run_id}}.jsonl", run_id="run7")
    sink.open()
    sink.write_batch([{"id": 1}, {"id": 2, "n": "ü"}])
    sink.flush()
    assert sorted(p.name for p in out.iterdir()) == [".orders-run7.jsonl.run7.tmp"]  # nothing final yet
    assert (out / ".orders-run7.jsonl.run7.tmp").read_text(encoding="utf-8").count("\n") == 2
    sink.write_batch([{"id": 3}])
    sink.close()
    assert sorted(p.name for p in out.iterdir()) == ["orders-run7.jsonl"]
    rows = [json.loads(line) for line in (out / "orders-run7.jsonl").read_text(encoding="utf-8").splitlines()]
    assert rows == [{"id": 1}, {"id": 2, "n": "ü"}, {"id": 3}]


def test_a_flow_writes_a_jsonl_file_over_sftp(sshd: Sshd, tmp_path: Path) -> None:
    out = sshd.root / "out-flow" / "deep"
    records = [{"id": i, "name": f"n{i}"} for i in range(25)]
    conn = sshd.conn()
    del conn["type"]
    spec = {"name": "to_sftp", "source": {"type": "memory", "records": records},
            "sink": {"type": "sftp", **conn, "path": f"{out}/orders-{{run_id}}.jsonl"},
            "runtime": {"batch_size": 10}}
    summary = run_flow(spec, state_dir=str(tmp_path / "state"))
    assert summary.status == "success", summary.error
    files = sorted(p.name for p in out.iterdir())
    assert files == [f"orders-{summary.run_id}.jsonl"]  # no temporary file left
    assert [json.loads(line) for line in (out / files[0]).read_text().splitlines()] == records
    # and read back over SFTP
    back = SftpSource(sshd.conn(path=f"{out}/orders-*.jsonl"))
    assert list(back.each()) == records


def test_a_failed_run_publishes_nothing_and_its_resume_completes_the_file(sshd: Sshd, tmp_path: Path) -> None:
    out = sshd.root / "out-failed"
    conn = sshd.conn()
    del conn["type"]
    spec: dict[str, Any] = {
        "name": "fails_then_resumes",
        "source": {"type": "memory", "records": [{"n": i} for i in range(1, 21)]},
        "steps": [{"type": "python", "function": "flowlib.steps:explode_on_sevens"}],
        "sink": {"type": "sftp", **conn, "path": f"{out}/result.jsonl"},
        "runtime": {"batch_size": 5, "max_dead_letters": 0},
    }
    failed = run_flow(spec, state_dir=str(tmp_path / "state"))
    assert failed.status == "failed" and "max_dead_letters" in (failed.error or "")
    names = sorted(p.name for p in out.iterdir())
    assert names == [f".result.jsonl.{failed.run_id}.tmp"]  # not published under the final name
    spec["runtime"] = {"batch_size": 5}
    resumed = run_flow(spec, state_dir=str(tmp_path / "state"))
    assert resumed.status == "partial" and resumed.resumed and resumed.run_id == failed.run_id
    assert sorted(p.name for p in out.iterdir()) == ["result.jsonl"]
    got = [json.loads(line)["n"] for line in (out / "result.jsonl").read_text().splitlines()]
    assert sorted(set(got)) == [n for n in range(1, 21) if n % 7]  # at least once: batch 2 may repeat
    assert got[:5] == [1, 2, 3, 4, 5]


def test_csv_sink_with_several_readers_writes_one_part_per_reader(sshd: Sshd, tmp_path: Path) -> None:
    out = sshd.root / "out-csv"
    conn = sshd.conn()
    del conn["type"]
    records = [{"id": i, "tag": f"t{i % 3}"} for i in range(30)]
    spec = {"name": "csv_parts", "source": {"type": "memory", "records": records, "splits": 4},
            "sink": {"type": "sftp", **conn, "path": f"{out}/export.csv"},
            "runtime": {"batch_size": 4, "parallelism": 2}}
    summary = run_flow(spec, state_dir=str(tmp_path / "state"))
    assert summary.status == "success", summary.error
    assert sorted(p.name for p in out.iterdir()) == ["export.part-0.csv", "export.part-1.csv"]
    got = []
    for part in out.iterdir():
        lines = part.read_text().splitlines()
        if not lines:
            continue  # that reader got no split (the other one was quicker): an empty file
        assert lines[0] == "id,tag"
        got += [tuple(line.split(",")) for line in lines[1:]]
    assert sorted(got, key=lambda r: int(r[0])) == [(str(r["id"]), r["tag"]) for r in records]


def test_a_resumed_sink_continues_its_file(sshd: Sshd, tmp_path: Path) -> None:
    out = sshd.root / "out-resume"
    state = tmp_path / "run"
    state.mkdir()
    first = _sink(sshd, f"{out}/x.csv", run_id="rr", state_dir=str(state))
    first.open()
    first.write_batch([{"a": 1, "b": "x"}])
    first.flush()  # the process dies here: the temporary file stays
    first.connection.close()
    second = _sink(sshd, f"{out}/x.csv", run_id="rr", state_dir=str(state))
    second.run_context.resuming = True
    second.open()
    second.write_batch([{"b": "y", "a": 2}])  # columns come from the file's header
    second.close()
    assert (out / "x.csv").read_bytes() == b"a,b\r\n1,x\r\n2,y\r\n"
    # an attempt that renamed its file and then died before the checkpoint was cleared
    third = _sink(sshd, f"{out}/x.csv", run_id="rr", state_dir=str(state))
    third.run_context.resuming = True
    third.open()
    third.write_batch([{"a": 3, "b": "z"}])
    third.close()
    assert (out / "x.csv").read_bytes() == b"a,b\r\n1,x\r\n2,y\r\n3,z\r\n"
    assert sorted(p.name for p in out.iterdir()) == ["x.csv"]


# --------------------------------------------------------------------------- password authentication


@dataclass
class _PasswordServer:
    port: int
    known_hosts: Path
    root: Path
    stop: threading.Event


def _password_server(paramiko: Any, tmp_path: Path, password: str) -> _PasswordServer:
    """An in-process SSH server (paramiko) that takes one password and serves SFTP over ``root``."""
    host_key = paramiko.Ed25519Key.from_private_key_file(str(_keygen_path(tmp_path / "pw_host_key")))
    root = tmp_path / "pw-files"
    root.mkdir()

    class Server(paramiko.ServerInterface):  # type: ignore[misc]
        def check_auth_password(self, username: str, pw: str) -> int:
            return int(paramiko.AUTH_SUCCESSFUL if pw == password else paramiko.AUTH_FAILED)

        def get_allowed_auths(self, username: str) -> str:
            return "password"

        def check_channel_request(self, kind: str, chanid: int) -> int:
            return int(paramiko.OPEN_SUCCEEDED if kind == "session" else paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED)

    class Handle(paramiko.SFTPHandle):  # type: ignore[misc]
        def stat(self) -> Any:
            return paramiko.SFTPAttributes.from_stat(os.fstat(self.readfile.fileno()))

    class Files(paramiko.SFTPServerInterface):  # type: ignore[misc]
        def _real(self, path: str) -> str:
            return str(root / self.canonicalize(path).lstrip("/"))

        def list_folder(self, path: str) -> Any:
            real = self._real(path)
            out = []
            for name in os.listdir(real):
                attr = paramiko.SFTPAttributes.from_stat(os.stat(os.path.join(real, name)))
                attr.filename = name
                out.append(attr)
            return out

        def stat(self, path: str) -> Any:
            try:
                return paramiko.SFTPAttributes.from_stat(os.stat(self._real(path)))
            except OSError as exc:
                return paramiko.SFTPServer.convert_errno(exc.errno)

        lstat = stat

        def open(self, path: str, flags: int, attr: Any) -> Any:
            try:
                fd = os.open(self._real(path), flags, 0o644)
            except OSError as exc:
                return paramiko.SFTPServer.convert_errno(exc.errno)
            mode = "ab" if flags & os.O_APPEND else ("r+b" if flags & (os.O_WRONLY | os.O_RDWR) else "rb")
            f = os.fdopen(fd, mode)
            handle = Handle(flags)
            handle.filename = self._real(path)
            handle.readfile = f
            handle.writefile = f
            return handle

        def posix_rename(self, old: str, new: str) -> int:
            os.replace(self._real(old), self._real(new))
            return int(paramiko.SFTP_OK)

        def mkdir(self, path: str, attr: Any) -> int:
            os.mkdir(self._real(path))
            return int(paramiko.SFTP_OK)

    logging.getLogger("adf_test.sshserver").setLevel(logging.CRITICAL)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            transport = paramiko.Transport(conn)
            transport.set_log_channel("adf_test.sshserver")  # quiet: clients hang up abruptly
            transport.add_server_key(host_key)
            transport.set_subsystem_handler("sftp", paramiko.SFTPServer, Files)
            transport.start_server(server=Server())
        listener.close()

    threading.Thread(target=serve, daemon=True).start()
    port = listener.getsockname()[1]
    known = tmp_path / "pw_known_hosts"
    known.write_text(f"[127.0.0.1]:{port} {host_key.get_name()} {host_key.get_base64()}\n")
    return _PasswordServer(port, known, root, stop)


def _keygen_path(path: Path) -> Path:
    _keygen(path)
    return path


def test_password_authentication(tmp_path: Path) -> None:
    paramiko = _require_tools()
    server = _password_server(paramiko, tmp_path, "s3cret-pw")
    try:
        (server.root / "in").mkdir()
        (server.root / "in" / "a.csv").write_text("id\n1\n2\n")
        conn = {"host": "127.0.0.1", "port": server.port, "username": "etl", "known_hosts": str(server.known_hosts)}
        source = SftpSource({**conn, "password": "s3cret-pw", "path": "/in/*.csv"})
        assert list(source.each()) == [{"id": "1"}, {"id": "2"}]
        sink = SftpSink({**conn, "password": "s3cret-pw", "path": "/out/o.jsonl"})
        sink.run_context = RunContext(run_id="p1", state_dir=str(tmp_path / "none"))
        sink.open()
        sink.write_batch([{"id": 1}])
        sink.close()
        assert (server.root / "out" / "o.jsonl").read_text() == '{"id":1}\n'
        with pytest.raises(SftpAuthError, match="refused the password") as info:
            list(SftpSource({**conn, "password": "wrong-pw-123", "path": "/in/*.csv"}).each())
        assert "wrong-pw-123" not in str(info.value)
    finally:
        server.stop.set()
