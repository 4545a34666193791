"""SFTP source and sink over SSH with paramiko (the ``sftp`` extra, imported on first connect).

Connection (both)
    ``{type: sftp, host: files.example.com, port: 22, username: etl, private_key:
    ~/.ssh/id_ed25519}`` — authenticate with ``password`` (secret), ``private_key`` (a key
    file; ``passphrase`` if it is encrypted) or ``private_key_data`` (the key text itself,
    secret); with none of them, the SSH agent and the usual ``~/.ssh/id_*`` keys are tried.
    ``username`` defaults to the local user.

    *Host keys are checked*: the server's key must be in ``known_hosts`` (default
    ``~/.ssh/known_hosts``; entries for another port are written ``[host]:port``, hashed
    entries work). An unknown key or a key that differs from the recorded one is refused
    with :class:`SftpHostKeyError` naming the key's fingerprint. Only an explicit
    ``host_key_checking: false`` accepts any key (a warning is logged).

``sftp`` source
    ``{type: sftp, host: …, path: /data/in/*.csv, format: csv}`` — ``path`` is a remote
    path whose file name may hold wildcards (``*``, ``?``, ``[…]``; not the directory part),
    or a list of them; files are read in sorted order, one split per file, through the same
    parsers as the ``file`` source (CSV options ``delimiter``, ``quotechar``, ``header``,
    ``columns``, ``encoding``, ``max_field_bytes``; ``format`` from the option or each file's
    extension), with the same handling of malformed input, line ends and byte-order marks.
    A file is streamed (pipelined reads of one buffer at a time, never loaded whole, except a
    JSON array file); a split's position is the byte offset and line number of the next
    record, as in the ``file`` source, so a resumed run continues inside the file.

``sftp`` sink
    ``{type: sftp, host: …, path: "/data/out/orders-{run_id}.jsonl", format: jsonl}`` —
    ``path`` may use ``{run_id}``, ``{flow}`` and ``{reader_id}``; with several readers and no
    ``{reader_id}``, each reader writes ``<name>.part-<reader_id><ext>``. Writes are atomic:
    records go to ``.<name>.<run_id>.tmp`` in the same directory (each batch written and
    acknowledged by the server before :meth:`SftpSink.flush` returns), and the sink renames it
    to the final name when it closes — with the ``posix-rename@openssh.com`` extension
    (replaces an existing file atomically) when the server has it, else remove + rename.
    Readers of the directory never see a half-written file: a sink closed while an error
    propagates (a failed run) leaves the temporary file in place. A resumed run appends to
    its temporary file (or reopens the file it already renamed). JSON Lines or CSV (header once
    per file; ``columns`` or the first record's fields).

The modules: ``session`` (the SSH session both share: :class:`SftpConnection`, its
attributes and errors, and a remote file read as a stream), ``source`` (:class:`SftpSource`,
built on the ``file`` source) and ``sink`` (:class:`SftpSink`). The names in ``__all__``, and
``CONNECTION_ATTRIBUTES``, are importable from ``active_data_flow.connectors.sftp`` itself; each module is
imported when one of its names is first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from active_data_flow.connectors.sftp.session import CONNECTION_ATTRIBUTES as CONNECTION_ATTRIBUTES
    from active_data_flow.connectors.sftp.session import (
        SftpAuthError,
        SftpConnection,
        SftpError,
        SftpHostKeyError,
    )
    from active_data_flow.connectors.sftp.sink import SftpSink
    from active_data_flow.connectors.sftp.source import SftpSource

__all__ = [
    "SftpAuthError",
    "SftpConnection",
    "SftpError",
    "SftpHostKeyError",
    "SftpSink",
    "SftpSource",
]


def __getattr__(name: str) -> Any:
    # A name's module is imported when the name is first asked for. A Spin component's build
    # imports every package it walks, this one included, and leaves the SFTP modules out (they
    # need paramiko and sockets): there, asking for a name fails as a module that is not part of the build.
    if name == "SftpSource":
        from active_data_flow.connectors.sftp import source

        return source.SftpSource
    if name == "SftpSink":
        from active_data_flow.connectors.sftp import sink

        return sink.SftpSink
    if name in ("CONNECTION_ATTRIBUTES", "SftpAuthError", "SftpConnection", "SftpError", "SftpHostKeyError"):
        from active_data_flow.connectors.sftp import session

        return getattr(session, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
