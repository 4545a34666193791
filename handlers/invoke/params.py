"""What a request may set: its records and the parameters its flow declares — nothing else.

One rule for every trigger that carries outside input: HTTP (the Lambda handler, the Spin
component, the web app's ``/invoke`` routes — all through :func:`active_data_flow.handlers.invoke.handle_http`),
Redis and MQTT messages (:func:`active_data_flow.handlers.invoke.handle_message`), SQS messages and S3 events
(:mod:`active_data_flow.handlers.invoke.events`). A flow's source, sink, steps, dead letters, runtime, state,
paths, URLs, Python functions — its spec — come from its operators only: the spec file, the
manifest variables (spin.toml, SAM parameters), the key-value store, the environment, ``adf run
--set``. A request brings **records** (for a ``payload`` source) and **values of the parameters
the flow declares** (``params:`` in the spec, a class-form flow's ``configuration_attributes``:
see :mod:`active_data_flow.spec`), which the flow's steps read as ``${params.name}``.

Where a request's parameter values come from, lowest first (a later one wins):

===============================  ==========================================================
``X-ADF-Params: {"vat": 0.19}``  a JSON object of values (JSON-typed)
``X-ADF-Param-Vat: 0.19``        one value per header; the name after ``X-ADF-Param-``
                                 is matched case-insensitively, ``-`` standing for ``_``
``?vat=0.19``                    query parameters (HTTP; ``stream`` and ``progress_interval``
                                 are not parameters)
``{"params": {"vat": 0.19}}``    the JSON body (HTTP POST, Redis / MQTT / SQS messages)
===============================  ==========================================================

Values in headers and the query string are text: they are read as the declared type — a
``string`` parameter keeps the text as sent, ``integer`` / ``number`` / ``boolean`` parse it,
``list`` / ``mapping`` / ``json`` read it as JSON. Then the declaration decides, as for any
configuration: the type, ``choices``, ``required``.

Answers (HTTP status; the ``code`` of a message's result):

* **400** :class:`RefusedRequest` — the request tries to set anything that is not a declared
  parameter: a body key other than ``records`` and ``params`` (``config``, ``spec``, ``sink``…;
  messages may also carry ``reply_to``, SQS bodies ``flow``), a query parameter or a
  ``params`` key that names no declared parameter (``?sink.path=/tmp/x``), any other
  ``X-ADF-*`` header. The error names every refused key (``refused``) and lists the declared
  parameters (``declared_params``). Nothing runs.
* **422** :class:`InvalidParams` — a declared parameter's value is wrong (type, not one of
  the choices, a required one missing): ``problems`` says which, ``declared_params`` lists them.

Standard library only at module level (this runs inside a Spin component).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from active_data_flow.attributes import Attribute
from active_data_flow.config import parse_value
from active_data_flow.handlers.invoke.errors import BadRequest, InvokeError
from active_data_flow.spec import describe_params

__all__ = [
    "BODY_KEYS",
    "HEADER_PARAMS",
    "HEADER_PARAM_PREFIX",
    "InvalidParams",
    "RefusedRequest",
    "RequestParams",
    "request_values",
]

#: the keys a request body may carry (messages add ``reply_to``, SQS bodies ``flow``)
BODY_KEYS = ("records", "params")
#: a JSON object of parameter values
HEADER_PARAMS = "x-adf-params"
#: ``X-ADF-Param-<name>: value``
HEADER_PARAM_PREFIX = "x-adf-param-"
_HEADER_PREFIX = "x-adf-"


def _shown(key: Any) -> str:
    text = str(key)
    return repr(text if len(text) <= 80 else text[:77] + "...")


def _listing(declared: Iterable[Attribute]) -> str:
    parts = []
    for a in declared:
        row = describe_params([a])[0]
        bits = [row["type"]]
        if "choices" in row:
            choices = row["choices"]
            bits.append("one of " + (", ".join(map(repr, choices)) if isinstance(choices, list) else choices))
        if a.required:
            bits.append("required")
        elif "default" in row:
            bits.append(f"default {row['default']!r}")
        parts.append(f"{a.name} ({', '.join(bits)})")
    return ", ".join(parts) if parts else "none (this flow takes only records)"


class RefusedRequest(BadRequest):
    """The request tries to set something that is not a declared parameter (400).

    ``refused`` names each key as sent (``body key 'config' (sink)``, ``query parameter
    'sink.path'``, ``header 'x-adf-sink.path'``); ``declared`` describes the parameters the
    flow does accept."""

    def __init__(self, flow: str, refused: Iterable[str], declared: Iterable[Attribute]) -> None:
        self.refused = list(refused)
        attributes = list(declared)
        self.declared = describe_params(attributes)
        super().__init__(
            f"a request may set only its records and the parameters flow {flow!r} declares; refused: "
            f"{'; '.join(self.refused)}. Declared parameters: {_listing(attributes)}"
        )


class InvalidParams(InvokeError):
    """A declared parameter's value is wrong: type, choices, a required one missing (422)."""

    status = 422

    def __init__(self, flow: str, problems: Iterable[str], declared: Iterable[Attribute]) -> None:
        attributes = list(declared)
        self.declared = describe_params(attributes)
        found = list(problems)
        super().__init__(
            f"invalid parameters for flow {flow!r}: {'; '.join(found)}. Declared parameters: {_listing(attributes)}",
            found,
        )


@dataclass
class _Entry:
    label: str  # how a refusal names it: "query parameter 'sink.path'", "header 'X-ADF-Param-X'"…
    name: str
    value: Any
    text: bool  # a header's or a query's value: read as the declared type
    fold: bool  # matched case-insensitively, '-' for '_' (header names)


@dataclass
class RequestParams:
    """What one request carries for a flow besides its records: the parameter values it
    gives (in precedence order) and what it tried to set that a request may not.

    Built by the transports (:meth:`from_http`, :meth:`from_payload`, :meth:`from_values`);
    :func:`request_values` applies the rule with the flow's declarations."""

    entries: list[_Entry] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.entries and not self.refused

    def add_values(self, values: Mapping[str, Any], where: str) -> None:
        """JSON-typed values (a body's ``params``, the ``X-ADF-Params`` header)."""
        self.entries.extend(_Entry(f"{where} key {_shown(k)}", str(k), v, False, False) for k, v in values.items())

    @classmethod
    def from_values(cls, values: Mapping[str, Any] | None, where: str = "params") -> RequestParams:
        out = cls()
        if values:
            out.add_values(values, where)
        return out

    def add_headers(self, headers: Mapping[str, str]) -> None:
        """``X-ADF-Params`` and ``X-ADF-Param-*``; any other ``X-ADF-*`` header is refused.
        Raises :class:`~active_data_flow.handlers.invoke.BadRequest` for an ``X-ADF-Params`` that is not
        a JSON object."""
        singles: list[_Entry] = []
        for raw_name, raw_value in headers.items():
            name = raw_name.lower()
            if not name.startswith(_HEADER_PREFIX):
                continue
            if name == HEADER_PARAMS:
                try:
                    value = json.loads(raw_value)
                except ValueError as exc:
                    raise BadRequest(f"header X-ADF-Params must be a JSON object of parameter values: {exc}") from None
                if not isinstance(value, dict):
                    raise BadRequest(
                        f"header X-ADF-Params must be a JSON object of parameter values, got {type(value).__name__}"
                    )
                self.add_values(value, "header X-ADF-Params")
            elif name.startswith(HEADER_PARAM_PREFIX) and len(name) > len(HEADER_PARAM_PREFIX):
                key = name[len(HEADER_PARAM_PREFIX) :].replace("-", "_")
                singles.append(_Entry(f"header {_shown(raw_name)}", key, raw_value.strip(), True, True))
            else:
                self.refused.append(f"header {_shown(raw_name)}")
        self.entries.extend(sorted(singles, key=lambda e: e.name))

    def add_query(self, query: Mapping[str, str], reserved: Iterable[str] = ()) -> None:
        """Query parameters: each one names a parameter (``?vat=0.19``)."""
        skip = set(reserved)
        self.entries.extend(
            _Entry(f"query parameter {_shown(k)}", k, v, True, False) for k, v in query.items() if k not in skip
        )

    def add_payload(self, params: Mapping[str, Any] | None, refused: Iterable[str]) -> None:
        """A parsed body's ``params`` and the keys its parser refused."""
        if params:
            self.add_values(params, "body params")
        self.refused.extend(refused)

    @classmethod
    def from_http(
        cls,
        headers: Mapping[str, str],
        query: Mapping[str, str],
        params: Mapping[str, Any] | None = None,
        refused: Iterable[str] = (),
        *,
        reserved: Iterable[str] = (),
    ) -> RequestParams:
        """Headers < query < body, as the module doc lists them."""
        out = cls()
        out.add_headers(headers)
        out.add_query(query, reserved)
        out.add_payload(params, refused)
        return out

    @classmethod
    def from_payload(cls, params: Mapping[str, Any] | None, refused: Iterable[str] = ()) -> RequestParams:
        out = cls()
        out.add_payload(params, refused)
        return out


def _from_text(attr: Attribute, text: Any) -> Any:
    if not isinstance(text, str):
        return text
    types = attr.type if isinstance(attr.type, tuple) else (attr.type,)
    if str in types:
        return text
    return parse_value(text)


def request_values(flow: str, declared: Iterable[Attribute], request: RequestParams) -> dict[str, Any]:
    """The parameter values ``request`` gives flow ``flow``, by declared name (text read as the
    declared type; the values themselves are checked when the flow is loaded).

    Raises :class:`RefusedRequest` naming everything the request may not set: the keys its
    transport refused already and every value that names no declared parameter."""
    attributes = list(declared)
    exact = {a.name: a for a in attributes}
    folded: dict[str, list[Attribute]] = {}
    for a in attributes:
        folded.setdefault(a.name.lower(), []).append(a)
    refused = list(request.refused)
    values: dict[str, Any] = {}
    for entry in request.entries:
        if entry.fold:
            matches = folded.get(entry.name.lower(), [])
            attr = matches[0] if len(matches) == 1 else None
        else:
            attr = exact.get(entry.name)
        if attr is None:
            refused.append(entry.label)
            continue
        values[attr.name] = _from_text(attr, entry.value) if entry.text else entry.value
    if refused:  # named in the order the sources count: headers, query, body
        refused.sort(key=lambda label: 0 if label.startswith("header") else 1 if label.startswith("query") else 2)
        raise RefusedRequest(flow, refused, attributes)
    return values
