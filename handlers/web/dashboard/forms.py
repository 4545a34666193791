"""Forms posted to the dashboard: the request body read within a limit (:func:`read_body`),
parsed as ``application/x-www-form-urlencoded`` or ``multipart/form-data`` by :func:`parse_form`
into a :class:`Form` of fields and uploaded files (:class:`UploadedFile`) or refused with a
:class:`FormError`; and the values the flow editor and the module upload read from a form
(:func:`parse_configuration`, :func:`schema_problems`, :func:`format_configuration`, :func:`parse_interval`,
:func:`module_id_from_filename`).

Multipart bodies are split into parts by python-multipart (the ``web`` extra), imported when
the first one arrives; the rest is standard library.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.message import Message
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from active_data_flow.handlers.web.dashboard.format import human_size

if TYPE_CHECKING:
    from starlette.requests import Request

#: largest form body (configuration edits and the like) and largest module upload
FORM_LIMIT = 2 * 1024 * 1024
UPLOAD_LIMIT = 64 * 1024 * 1024
#: longest multipart boundary accepted
BOUNDARY_LIMIT = 200

_BAD_BOUNDARY_LINE = "malformed multipart form: bad boundary line"
_NO_CLOSING_BOUNDARY = "malformed multipart form: the closing boundary is missing"
_NO_HEADER_END = "malformed multipart form: a part has no header end"
_BAD_HEADER = "malformed multipart form: a part has a malformed header line"


class FormError(ValueError):
    """A request body that cannot be read as a form (``status``: 400, 413 or 415)."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)


@dataclass(frozen=True)
class UploadedFile:
    filename: str
    content_type: str
    data: bytes


@dataclass
class Form:
    """Fields of a urlencoded or multipart form (repeated names keep every value) and files."""

    fields: dict[str, list[str]] = field(default_factory=dict)
    files: dict[str, UploadedFile] = field(default_factory=dict)

    def get(self, name: str, default: str = "") -> str:
        values = self.fields.get(name)
        return values[0] if values else default

    def getlist(self, name: str) -> list[str]:
        return list(self.fields.get(name, []))

    def add(self, name: str, value: str) -> None:
        self.fields.setdefault(name, []).append(value)


def _header_params(value: str) -> tuple[str, dict[str, str]]:
    """``form-data; name="a"; filename="b.wasm"`` → ``("form-data", {name: a, filename: b.wasm})``."""
    msg = Message()
    msg["x"] = value
    params = msg.get_params(header="x") or []
    main = params[0][0].lower() if params else ""
    out: dict[str, str] = {}
    for key, val in params[1:]:
        out[key.lower()] = val if isinstance(val, str) else str(val[2])
    return main, out


# --------------------------------------------------------------------------- multipart


def _delimited(body: bytes, dash: bytes) -> bytes:
    """``body`` as the multipart parser gets it, once its structure is checked.

    A delimiter is CRLF and ``dash`` (``--`` and the boundary). The last boundary line must be
    the closing one (``--`` after the boundary); every other one holds transport padding at
    most (the parser would take such a line going on with other text for content), and the
    part after it has a header section that ends: a blank line, or a line break just before
    the next delimiter (a part with headers and no body).

    What the parser gets starts at the first boundary line (the preamble before it is
    dropped), without the padding of the boundary lines, and with one more CRLF before every
    later delimiter: that CRLF ends each part's content and is taken off again
    (:meth:`_Parts.finish`), or, for a part with headers and no body, ends the header section,
    which the delimiter's own CRLF would otherwise be taken for.
    """
    delimiter = b"\r\n" + dash
    found = body.find(delimiter)
    first = 0 if body.startswith(dash) else (found + 2 if found >= 0 else -1)
    last = body.rfind(delimiter)
    last = last + 2 if last >= 0 else first
    if first < 0 or not body.startswith(b"--", last + len(dash)):
        raise FormError(400, _NO_CLOSING_BOUNDARY)
    pieces = [dash]
    at = first
    while at < last:
        following = body.find(delimiter, at + len(dash))
        if following < 0:  # only for a boundary that holds a line break itself
            break
        line_end = body.find(b"\r\n", at + len(dash), following)
        if line_end < 0 or body[at + len(dash) : line_end].strip(b" \t"):
            raise FormError(400, _BAD_BOUNDARY_LINE)
        part = line_end + 2
        if body.find(b"\r\n\r\n", part, following) < 0 and not body.endswith(b"\r\n", part, following):
            raise FormError(400, _NO_HEADER_END)
        pieces += [body[line_end:following], b"\r\n", delimiter]
        at = following + 2
    pieces.append(body[at + len(dash) :])  # the closing line and what follows it
    return b"".join(pieces)


class _Parts:
    """What the multipart parser reports of each part, read into :attr:`form` as parts end."""

    def __init__(self) -> None:
        self.form = Form()
        self.ended = False
        self.headers: dict[str, str] = {}
        self.content = bytearray()
        self._name = bytearray()
        self._value = bytearray()

    def begin(self) -> None:
        self.headers = {}
        self.content = bytearray()

    def header_name(self, data: bytes, start: int, end: int) -> None:
        self._name += memoryview(data)[start:end]

    def header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += memoryview(data)[start:end]

    def header_end(self) -> None:
        name = self._name.decode("utf-8", "replace").strip().lower()
        self.headers[name] = self._value.decode("utf-8", "replace").strip()
        self._name, self._value = bytearray(), bytearray()

    def data(self, data: bytes, start: int, end: int) -> None:
        self.content += memoryview(data)[start:end]

    def finish(self) -> None:
        """A part ends: a field, a file, or nothing (a part that is not ``form-data`` with a name)."""
        content = self.content
        if content.endswith(b"\r\n"):  # the CRLF _delimited put before the delimiter
            del content[-2:]
        kind, params = _header_params(self.headers.get("content-disposition", ""))
        if kind != "form-data" or "name" not in params:
            return
        if "filename" in params:
            self.form.files[params["name"]] = UploadedFile(
                filename=params["filename"],
                content_type=self.headers.get("content-type", "application/octet-stream"),
                data=bytes(content),
            )
        else:
            self.form.add(params["name"], content.decode("utf-8", "replace"))

    def end(self) -> None:
        self.ended = True


def _parse_multipart(body: bytes, boundary: str) -> Form:
    if not boundary or len(boundary) > BOUNDARY_LIMIT:
        raise FormError(400, "multipart form without a valid boundary")
    from python_multipart.exceptions import MultipartParseError
    from python_multipart.multipart import MultipartParser

    dash = b"--" + boundary.encode("latin-1")
    stream = _delimited(body, dash)
    parts = _Parts()
    parser = MultipartParser(
        dash[2:],
        {
            "on_part_begin": parts.begin,
            "on_header_field": parts.header_name,
            "on_header_value": parts.header_value,
            "on_header_end": parts.header_end,
            "on_part_data": parts.data,
            "on_part_end": parts.finish,
            "on_end": parts.end,
        },
        # the body is whole and within its limit already: no further limit per header
        max_header_count=len(stream),
        max_header_size=len(stream),
    )
    try:
        parser.write(stream)
        parser.finalize()
    except MultipartParseError:  # a header line that is not "Name: value"
        raise FormError(400, _BAD_HEADER) from None
    if not parts.ended:
        raise FormError(400, _NO_CLOSING_BOUNDARY)
    return parts.form


# --------------------------------------------------------------------------- forms


def parse_form(content_type: str, body: bytes) -> Form:
    """A form from a request body: ``application/x-www-form-urlencoded`` or
    ``multipart/form-data`` (an empty body is an empty form). :class:`FormError` otherwise."""
    kind, params = _header_params(content_type or "")
    if not body and kind in ("", "application/x-www-form-urlencoded", "multipart/form-data"):
        return Form()
    if kind == "application/x-www-form-urlencoded":
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise FormError(400, "the form is not UTF-8") from None
        form = Form()
        for key, value in parse_qsl(text, keep_blank_values=True, max_num_fields=1000):
            form.add(key, value)
        return form
    if kind == "multipart/form-data":
        return _parse_multipart(body, params.get("boundary", ""))
    raise FormError(415, f"expected a form (application/x-www-form-urlencoded or multipart/form-data), "
                         f"got {content_type or 'no Content-Type'}")


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, or :class:`FormError` 413 as soon as it is longer than ``limit``."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise FormError(413, f"the request body is larger than {human_size(limit)}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise FormError(413, f"the request body is larger than {human_size(limit)}")
        chunks.append(chunk)
    return b"".join(chunks)


# --------------------------------------------------------------------------- values


def parse_configuration(text: str, fmt: str) -> tuple[Any, list[str]]:
    """A flow configuration typed as JSON or YAML: ``(value, problems)``; value is None when
    the text cannot be read as a mapping."""
    if not text.strip():
        return None, ["configuration: is empty (the flow spec: source, steps, sink, runtime)"]
    if fmt == "yaml":
        import yaml

        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            reason = getattr(exc, "problem", None) or str(exc)
            return None, [f"configuration: invalid YAML{where}: {reason}"]
    else:
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            return None, [f"configuration: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"]
    if not isinstance(value, dict):
        return None, [f"configuration: must be a mapping (source, steps, sink, runtime), got {type(value).__name__}"]
    return value, []


def format_configuration(configuration: Mapping[str, Any], fmt: str) -> str:
    if fmt == "yaml":
        import yaml

        return str(yaml.safe_dump(dict(configuration), sort_keys=False, allow_unicode=True, default_flow_style=False))
    return json.dumps(configuration, indent=2, ensure_ascii=False)


def schema_problems(configuration: Mapping[str, Any], name: str | None) -> list[str]:
    """Where a configuration does not match the flow schema (``adf schema``; the API checks the
    same), as the editor lists problems: ``configuration: $.source.pth: unknown key …``."""
    from active_data_flow.spec_schema import check_configuration

    return [f"configuration: {p}" for p in check_configuration(configuration, name)]


def parse_schedule(
    interval_text: str, cron_text: str | None, timezone_text: str | None
) -> tuple[int | None, dict[str, str] | None, list[str]]:
    """The form's run interval or cron schedule (``{cron, timezone}``, UTC when no zone is
    given): a cron expression with an empty interval field is a cron flow; the store checks
    the expression and the zone (and refuses both at once)."""
    cron = (cron_text or "").strip()
    if not cron:
        interval, problems = parse_interval(interval_text)
        return interval, None, problems
    schedule = {"cron": cron, "timezone": (timezone_text or "").strip() or "UTC"}
    if not (interval_text or "").strip():
        return None, schedule, []
    interval, problems = parse_interval(interval_text)
    return interval, schedule, problems


def parse_interval(text: str) -> tuple[int | None, list[str]]:
    text = text.strip()
    if not re.fullmatch(r"[0-9]{1,12}", text):
        return None, [f"run_interval: must be a positive integer (seconds), got {text!r}"]
    return int(text), []


def module_id_from_filename(name: str) -> str:
    stem = name.rsplit("/", 1)[-1].rsplit("\\", 1)[-1]
    stem = re.sub(r"\.(wasm|wat)$", "", stem, flags=re.IGNORECASE).lower()
    stem = re.sub(r"[^a-z0-9_.-]+", "-", stem).strip("-._")
    return stem[:128]
