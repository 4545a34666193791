"""File source and sink: local paths and ``s3://`` URLs, CSV / JSON array / JSON Lines.

One package for both because they share what a file is here — paths and globs, formats,
encodings, CSV options — while the parsing itself lives in :mod:`active_data_flow.formats`.

``file`` source
    ``{type: file, path: data/orders/*.csv}`` — ``path`` is a glob (``**`` crosses
    directories) or a list of them, local or ``s3://bucket/prefix/*.csv``; files are read
    in sorted order, one split per file. The format comes from ``format`` or each file's
    extension (``.csv``/``.tsv``, ``.json``, ``.jsonl``/``.ndjson``). With ``split_bytes``
    (``67108864`` or ``"64MB"``; K/M/G are powers of 1024) a CSV or JSONL file bigger than
    that becomes several byte-range splits whose boundaries are record starts under the
    readers' own rules (the enumerator scans a CSV file once to find them and their line
    numbers — for S3 that is one extra GET of the object; a JSON Lines file needs only a
    short read per boundary). Without ``split_bytes``, a run with more readers than files
    cuts its CSV and JSON Lines files the same way by itself (``auto_split``, on by default):
    about four ranges per reader, none smaller than ``min_split_bytes`` (default 16 MiB);
    when the run still has fewer splits than readers, the enumerator logs one warning naming
    each file left whole, why, and what would let it be cut. A JSON array file, and a
    UTF-16/32 file, is always one split; a JSON array file is parsed whole in memory. With ``watch: true`` the source is
    unbounded: each discovery globs again and adds files it has not seen (write files under
    another name and rename them into place; a file is read as it is when discovered). No
    file matching is an error (:class:`NoFilesError`) for a bounded source.

    Malformed input never stops a run and is never dropped: every line is a record, part of
    one, a dead letter with its file, line and byte offset, or blank (skipped) — see
    :mod:`active_data_flow.formats` and docs/INPUT.md. ``max_field_bytes`` (default 64 MiB) is the
    longest CSV field, quotes included, and the longest JSON line; a longer one, or a quoted
    field never closed, is a dead letter and reading goes on with the next line. Lines end at
    LF, CRLF or a lone CR. ``encoding`` (ASCII-compatible, default ``utf-8``) gives way to a
    byte-order mark: UTF-8, UTF-16 LE/BE and UTF-32 LE/BE files are read in their encoding.
    A CSV header that names a column twice fails the run with
    :class:`~active_data_flow.errors.SourceDataError` (rename the columns with ``columns``); an empty
    name is kept as the field ``""``. An error while reading a file (it vanished, a network
    failure) is raised as :class:`FileReadError` naming the file and where reading stopped.

    A split's position is ``{"offset": <byte offset>, "line": <1-based line number>}``
    of the next unread line (``{"index": <element>}`` for a JSON array), updated after every
    batch. Each batch says where its records came from (``ReaderBatch.origins``): the file and
    each record's first line — the element index in a JSON array, the byte offset in a JSON
    Lines byte range whose first line number the enumerator did not count.

``file`` sink
    ``{type: file, path: out/orders.jsonl, mode: overwrite}`` — JSON Lines or CSV (from
    ``format`` or the extension). ``mode: overwrite`` truncates the file once per run in
    :meth:`FileSink.setup` (not when the run resumes); ``append`` keeps what is there.

    *Local files and several readers*: every reader process opens the file with
    ``O_APPEND`` and writes each batch with a single ``os.write`` of the whole encoded
    batch, so batches of different readers never interleave (lines of one batch stay
    together, batches of different readers are in arrival order). :meth:`FileSink.flush`
    leaves the data in the OS (it survives a crash of the process); ``fsync: true`` also
    syncs it to disk. A CSV header is written once per file: under an exclusive
    ``flock`` the first batch of a process checks whether the file is empty; if it is
    not, the columns are read from its header row so that every process writes the same
    column order.

    *S3* (``path: s3://bucket/out/orders.jsonl``): S3 objects cannot be appended to, so
    each reader buffers its records in a local file in the run's state directory
    (``<state_dir>/file-sink/``; ``flush`` makes it durable the same way, and a resumed
    run keeps appending to it) and uploads it when the sink closes: as the object
    ``out/orders.jsonl`` when the run has one reader, as ``out/orders.part-<reader_id>.jsonl``
    (one standalone file per reader, each with its CSV header) when it has several.
    ``mode: overwrite`` deletes that object and its ``.part-*`` objects in ``setup``;
    ``mode: append`` starts each buffer from the current object's content.

The modules: ``options`` (sizes and the attribute checks, which the ``sftp`` connectors use
too), ``paths`` (local paths and ``s3://`` URLs: listing, opening a byte range, the errors of
finding and reading files), ``splits`` (:class:`FileSplit`, :class:`FileSplitEnumerator`),
``source`` (:class:`FileSource`: configuration and cutting files into splits), ``reader``
(:class:`FileSourceReader`) and ``sink`` (:class:`FileSink`). The names in ``__all__``, and
the attribute checks ``ascii_character``, ``check_csv_config``, ``check_encoding`` and
``check_size``, are importable from ``active_data_flow.connectors.file`` itself; each module is imported
when one of its names is first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from active_data_flow.connectors.file.options import ascii_character as ascii_character
    from active_data_flow.connectors.file.options import check_csv_config as check_csv_config
    from active_data_flow.connectors.file.options import check_encoding as check_encoding
    from active_data_flow.connectors.file.options import check_size as check_size
    from active_data_flow.connectors.file.options import parse_size
    from active_data_flow.connectors.file.paths import FileReadError, NoFilesError
    from active_data_flow.connectors.file.reader import FileSourceReader
    from active_data_flow.connectors.file.sink import FileSink
    from active_data_flow.connectors.file.source import FileSource
    from active_data_flow.connectors.file.splits import FileSplit, FileSplitEnumerator

__all__ = [
    "FileReadError",
    "FileSink",
    "FileSource",
    "FileSourceReader",
    "FileSplit",
    "FileSplitEnumerator",
    "NoFilesError",
    "parse_size",
]


def __getattr__(name: str) -> Any:
    # A name's module is imported when the name is first asked for (a Spin component's build
    # imports them all: the file source runs inside components).
    if name == "FileSource":
        from active_data_flow.connectors.file import source

        return source.FileSource
    if name == "FileSourceReader":
        from active_data_flow.connectors.file import reader

        return reader.FileSourceReader
    if name in ("FileSplit", "FileSplitEnumerator"):
        from active_data_flow.connectors.file import splits

        return getattr(splits, name)
    if name == "FileSink":
        from active_data_flow.connectors.file import sink

        return sink.FileSink
    if name in ("FileReadError", "NoFilesError"):
        from active_data_flow.connectors.file import paths

        return getattr(paths, name)
    if name in ("ascii_character", "check_csv_config", "check_encoding", "check_size", "parse_size"):
        from active_data_flow.connectors.file import options

        return getattr(options, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
