"""The SSH session the ``sftp`` source and sink share, and a remote file as a stream.

:class:`SftpConnection` connects with paramiko (imported on first connect), checks the
server's host key against ``known_hosts`` and, when closed, waits for paramiko's transport
thread to end; :data:`CONNECTION_ATTRIBUTES` are the attributes that configure it;
:class:`SftpRaw` reads a remote file in pipelined windows.
"""

from __future__ import annotations

import base64
import contextlib
import getpass
import hashlib
import io
import logging
import os
import threading
import time
from collections.abc import Mapping
from typing import Any

from active_data_flow.attributes import Attribute
from active_data_flow.errors import AdfError, ConfigError, MissingExtraError
from active_data_flow.logs import get_logger, log_event

_log = get_logger("connectors.sftp")
_WINDOW = 1 << 20  # bytes requested at once (pipelined 32 KiB reads)
_THREAD_EXIT_S = 10.0  # how long close() waits for paramiko's transport thread


class SftpError(AdfError):
    """Connecting to or talking to the SFTP server failed."""


class SftpHostKeyError(SftpError):
    """The server's host key is unknown or differs from ``known_hosts``: the connection is refused."""


class SftpAuthError(SftpError):
    """The server refused the credentials."""


def _import_paramiko(what: str) -> Any:
    try:
        import paramiko
    except ImportError as exc:
        raise MissingExtraError("paramiko", "sftp", what) from exc
    return paramiko


def _fingerprint(key: Any) -> str:
    digest = hashlib.sha256(key.asbytes()).digest()
    return f"{key.get_name()} SHA256:{base64.b64encode(digest).decode('ascii').rstrip('=')}"


def _check_port(value: Any) -> str | None:
    return None if 0 < value < 65536 else f"must be a TCP port (1-65535), got {value}"


CONNECTION_ATTRIBUTES = (
    Attribute("host", str, required=True, help="the SFTP server"),
    Attribute("port", int, default=22, check=_check_port),
    Attribute("username", str, help="default: the local user name"),
    Attribute("password", str, secret=True, help="password authentication"),
    Attribute("private_key", str, help="path of a private key file"),
    Attribute("private_key_data", str, secret=True, help="the private key itself (PEM/OpenSSH text)"),
    Attribute("passphrase", str, secret=True, help="passphrase of an encrypted private key"),
    Attribute("known_hosts", str, default="~/.ssh/known_hosts", help="known_hosts file the host key must be in"),
    Attribute("host_key_checking", bool, default=True,
              help="refuse unknown or changed host keys (false accepts any key: insecure)"),
    Attribute("timeout_s", float, default=30.0, help="connect / banner / auth timeout"),
)


class _RefuseUnknown:
    """paramiko missing-host-key policy: refuse with a message saying what to do."""

    def __init__(self, where: str, known_hosts: str) -> None:
        self.where = where
        self.known_hosts = known_hosts

    def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
        exists = os.path.exists(self.known_hosts)
        host, _, port = hostname.strip("[").partition("]:")
        scan = f"ssh-keyscan{' -p ' + port if port else ''} {host} >> {self.known_hosts}"
        raise SftpHostKeyError(
            f"{self.where}: host key verification failed for {hostname}: its key {_fingerprint(key)} is not in "
            f"{self.known_hosts}{'' if exists else ' (the file does not exist)'}; refusing to connect. Check the "
            f"fingerprint with the server's administrator, then add it (e.g. `{scan}`), or point 'known_hosts' "
            f"at a file that has it. 'host_key_checking: false' accepts any key (insecure)."
        )


class _AcceptAny:
    def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
        log_event(_log, "host key checking is off; accepting the server's key", logging.WARNING, host=hostname,
                  key=_fingerprint(key))


def _wait_thread_gone(thread: threading.Thread, timeout: float) -> bool:
    """Wait until ``thread`` has ended, including what runs after its Python code (TLS destructors).

    ``join()`` returns when the thread's Python code is done; C libraries' per-thread clean-up
    (OpenSSL's among them) runs after that. On Linux the thread's ``/proc/self/task`` entry goes
    away only when the thread is fully gone; elsewhere ``join()`` is all there is.
    """
    deadline = time.monotonic() + timeout
    thread.join(timeout)
    if thread.is_alive():
        return False
    task = f"/proc/self/task/{thread.native_id}" if thread.native_id is not None else None
    if task is None or not os.path.isdir("/proc/self/task"):
        return True
    while os.path.exists(task):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.001)
    return True


class SftpConnection:
    """How to reach one server (from the connector's validated config); :meth:`open` connects."""

    def __init__(self, config: Mapping[str, Any], where: str) -> None:
        self.where = where
        self.host: str = config["host"]
        self.port: int = int(config["port"])
        self.username: str = config["username"] or getpass.getuser()
        self.password: str | None = config["password"]
        self.private_key: str | None = config["private_key"]
        self.private_key_data: str | None = config["private_key_data"]
        self.passphrase: str | None = config["passphrase"]
        self.known_hosts: str = os.path.expanduser(config["known_hosts"])
        self.host_key_checking: bool = bool(config["host_key_checking"])
        self.timeout: float = float(config["timeout_s"])
        self.client: Any = None
        self.sftp: Any = None

    @property
    def address(self) -> str:
        return f"{self.username}@{self.host}:{self.port}"

    @property
    def host_entry(self) -> str:
        """The host's name in known_hosts: ``host``, or ``[host]:port`` for another port than 22."""
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"

    def _load_key(self, paramiko: Any) -> Any:
        if self.private_key:
            path = os.path.expanduser(self.private_key)
            try:
                return paramiko.PKey.from_path(path, self.passphrase)
            except FileNotFoundError:
                raise ConfigError(self.where, [f"'private_key': no file {path!r}"]) from None
            except (paramiko.SSHException, ValueError, TypeError, OSError) as exc:
                raise SftpAuthError(f"{self.where}: cannot load private_key {path!r}: {type(exc).__name__}: {exc}") from None
        if self.private_key_data:
            errors = []
            for name in ("Ed25519Key", "ECDSAKey", "RSAKey"):
                cls = getattr(paramiko, name, None)
                if cls is None:
                    continue
                try:
                    return cls.from_private_key(io.StringIO(self.private_key_data), password=self.passphrase)
                except (paramiko.SSHException, ValueError, TypeError) as exc:
                    errors.append(f"{name}: {type(exc).__name__}")
            raise SftpAuthError(f"{self.where}: private_key_data is not a private key paramiko can read ({'; '.join(errors)})")
        return None

    def open(self) -> Any:
        """Connect (once) and return the paramiko ``SFTPClient``."""
        if self.sftp is not None:
            return self.sftp
        paramiko = _import_paramiko(self.where)
        pkey = self._load_key(paramiko)
        client = paramiko.SSHClient()
        if self.host_key_checking:
            if os.path.exists(self.known_hosts):
                try:
                    client.load_host_keys(self.known_hosts)
                except (OSError, paramiko.SSHException) as exc:
                    raise SftpHostKeyError(f"{self.where}: cannot read known_hosts {self.known_hosts!r}: {exc}") from None
            client.set_missing_host_key_policy(_RefuseUnknown(self.where, self.known_hosts))
        else:
            client.set_missing_host_key_policy(_AcceptAny())
        has_credentials = bool(self.password or pkey is not None)
        try:
            client.connect(
                self.host,
                port=self.port,
                username=self.username,
                password=self.password,
                pkey=pkey,
                allow_agent=not has_credentials,
                look_for_keys=not has_credentials,
                timeout=self.timeout,
                banner_timeout=self.timeout,
                auth_timeout=self.timeout,
            )
            sftp = client.open_sftp()
        except SftpError:
            client.close()
            raise
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise SftpHostKeyError(
                f"{self.where}: host key verification failed for {self.host_entry}: the server presented "
                f"{_fingerprint(exc.key)} but {self.known_hosts} records {_fingerprint(exc.expected_key)}; refusing to "
                f"connect. The server's key changed or someone is intercepting the connection. If the change is "
                f"expected, remove the old entry (`ssh-keygen -R '{self.host_entry}' -f {self.known_hosts}`) and add "
                f"the new key after checking its fingerprint."
            ) from None
        except paramiko.AuthenticationException as exc:
            client.close()
            how = "password" if self.password else "private key" if pkey is not None else "SSH agent / ~/.ssh keys"
            raise SftpAuthError(f"{self.where}: {self.address} refused the {how}: {exc}") from None
        except (paramiko.SSHException, OSError, EOFError) as exc:
            client.close()
            raise SftpError(f"{self.where}: cannot connect to {self.address}: {type(exc).__name__}: {exc}") from None
        self.client, self.sftp = client, sftp
        return sftp

    def close(self) -> None:
        """Close the session and wait for paramiko's transport thread to end.

        paramiko's ``close()`` does not wait for that thread, and on its way out the thread still
        runs OpenSSL's thread clean-up, which takes OpenSSL's process-wide lock. The engine forks
        its reader processes right after the coordinator lists the files: a fork while that lock is
        held leaves it held forever in the child, whose first key exchange then never returns.
        """
        sftp, client = self.sftp, self.client
        self.sftp = self.client = None
        transport = None
        if sftp is not None:
            with contextlib.suppress(Exception):
                sftp.close()
        if client is not None:
            with contextlib.suppress(Exception):
                transport = client.get_transport()
            with contextlib.suppress(Exception):
                client.close()
        if transport is not None and transport is not threading.current_thread():
            if not _wait_thread_gone(transport, _THREAD_EXIT_S):
                log_event(_log, "the SSH transport thread did not end after closing", logging.WARNING,
                          server=self.address, waited_s=_THREAD_EXIT_S)


class SftpRaw(io.RawIOBase):
    """A seekable raw stream over a remote file: each read asks for one window with pipelined requests."""

    def __init__(self, handle: Any, size: int) -> None:
        super().__init__()
        self._f = handle
        self._size = size
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        if whence == io.SEEK_SET:
            self._pos = offset
        elif whence == io.SEEK_CUR:
            self._pos += offset
        else:
            self._pos = self._size + offset
        return self._pos

    def tell(self) -> int:
        return self._pos

    def readinto(self, buffer: Any) -> int:
        want = min(len(buffer), _WINDOW, self._size - self._pos)
        if want <= 0:
            return 0
        data = b"".join(self._f.readv([(self._pos, want)]))
        got = len(data)
        memoryview(buffer).cast("B")[:got] = data
        self._pos += got
        return got

    def close(self) -> None:
        if not self.closed:
            try:
                self._f.close()
            finally:
                super().close()
