"""HTTP source and sink: JSON APIs over ``http://`` / ``https://`` with the standard library.

``http`` source
    ``{type: http, url: https://api.example.com/orders, records_path: data.items,
    pagination: {type: next_link, path: links.next}}`` — each response must be JSON;
    ``records_path`` is the dotted path of the records list in it (``""``: the body is the
    list; a number in a path indexes a list). A response that is not JSON, or whose
    ``records_path`` is not a list, fails the run with :class:`HttpSourceError` (a
    misconfiguration); an element of the list that is not an object becomes a dead letter.

    Pagination kinds (``pagination.type``):

    * ``next_link`` — the next page's URL is at ``path`` in the body (default ``links.next``;
      relative URLs are resolved against the request); stops when it is missing or empty;
    * ``link_header`` — the next page's URL is the ``Link: <…>; rel="next"`` header;
    * ``page`` — ``param`` (default ``page``) counts from ``start`` (default 1), with
      ``size_param``/``size`` sent when set; stops at an empty page;
    * ``offset`` — ``param`` (default ``offset``) from ``start`` (default 0) moved by the
      number of records received, ``limit_param``/``limit`` (default ``limit``/100); stops at
      an empty page;
    * ``cursor`` — the next cursor is at ``path`` (default ``meta.next_cursor``) and sent
      as ``param`` (default ``cursor``); stops when the cursor is missing, unchanged, or
      the page is empty;
    * ``none`` — one request (a warning when the response signals more pages).

    Without ``pagination`` the first response decides (see
    :mod:`active_data_flow.connectors.http.paging`): a ``Link`` ``rel="next"`` header, a next
    URL in the body (``next``, ``links.next``, ``_links.next.href``…) or a cursor
    (``next_cursor`` → ``cursor``, ``next_page_token`` → ``page_token``…); the choice is
    logged and reported as a run-summary warning of kind ``pagination_detected``. Pages
    signalled but not read (``none``, ``max_pages``, ``has_more: true``) are a
    ``pages_not_followed`` warning; a next URL already read ends the split with a
    ``pagination_loop`` warning.

    Splits: for ``page`` and ``offset`` with ``total_path`` (the total number of records in
    the first response) or ``total_pages_path``, the enumerator fetches the first page
    once, and makes one split per ``pages_per_split`` pages (default 1), so parallel
    readers fetch different pages. Otherwise the source is one sequential split. A split's
    position is ``{"next": <next URL | page | offset | cursor | page index>, "skip":
    <records of that page already read>, "pages": <pages read>, "value": <incremental
    value>}``, so a resumed run continues with the page it stopped in.

    ``incremental: {param: since, path_in_record: updated_at}`` remembers the largest
    ``path_in_record`` value read by a successful run in the flow's state store (key
    ``http_cursor/<flow>/<hash of url>``); the next run sends it as ``param`` on every
    request. With ``pagination.type: cursor`` and no ``path_in_record``, the last cursor
    received is remembered instead and the next run starts from it.

    429, 408 and 5xx answers and network errors are retried ``retries`` times with
    exponential backoff (``retry_backoff_s`` doubled each time, at most ``max_backoff_s``);
    a ``Retry-After`` header (seconds or an HTTP date) replaces the computed wait, capped
    the same way.

``http`` sink
    ``{type: http, url: …, method: POST, batch_size: 100, format: json_array}`` — one
    request per ``batch_size`` records, the body a JSON array, NDJSON, or one object per
    request (``single``). Each request carries ``Idempotency-Key`` (the header named by
    ``idempotency_key_header``; ``""`` turns it off): a hash of the run id and the body, so
    a retried request carries the same key. 429/408/5xx are retried like the source, then
    fail the run (:class:`HttpSinkError`; the checkpoint lets the next run resume); 401 and
    403 fail the run at once (:class:`HttpAuthError`: credentials are a configuration
    matter). Any other 4xx raises :class:`HttpRejected`, a
    :class:`~active_data_flow.errors.RecordValidationError`: the engine then writes the batch's records
    one by one and dead-letters those the server refuses, with the status and the body of
    the answer. Records of the batch that the server already took are not sent again
    while the engine isolates the refused ones.

``auth`` (both): ``{type: bearer, token: …}``, ``{type: basic, username: …, password: …}``
or ``{type: header, name: X-Api-Key, value: …}``. ``auth`` and ``headers`` are secret
attributes: redacted in logs, run records and ``adf config explain``. Credentials are
not sent again after a redirect.

The modules: ``common`` (what the source and the sink share: the ``auth``, ``headers``,
timeout and retry attributes and the client they configure), ``paging`` (the pagination
kinds, JSON paths, ``Link`` headers, query parameters), ``source`` (:class:`HttpSplit`,
:class:`HttpSource`, its enumerator and reader) and ``sink`` (:class:`HttpSink` and its
errors). The HTTP client itself is :mod:`active_data_flow.http_client`. The names in ``__all__``, and
:func:`with_params`, are importable from ``active_data_flow.connectors.http`` itself; each module is
imported when one of its names is first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from active_data_flow.connectors.http.paging import json_path, parse_link_header
    from active_data_flow.connectors.http.paging import with_params as with_params
    from active_data_flow.connectors.http.sink import HttpAuthError, HttpRejected, HttpSink, HttpSinkError
    from active_data_flow.connectors.http.source import HttpSource, HttpSourceError, HttpSplit
    from active_data_flow.retry import retry_after_seconds

__all__ = [
    "HttpAuthError",
    "HttpRejected",
    "HttpSink",
    "HttpSinkError",
    "HttpSource",
    "HttpSourceError",
    "HttpSplit",
    "json_path",
    "parse_link_header",
    "retry_after_seconds",
]


def __getattr__(name: str) -> Any:
    # A name's module is imported when the name is first asked for. A Spin component's build
    # imports every package it walks, this one included, and leaves the HTTP modules out (they
    # need sockets): there, asking for a name fails as a module that is not part of the build.
    if name in ("HttpSource", "HttpSourceError", "HttpSplit"):
        from active_data_flow.connectors.http import source

        return getattr(source, name)
    if name in ("HttpAuthError", "HttpRejected", "HttpSink", "HttpSinkError"):
        from active_data_flow.connectors.http import sink

        return getattr(sink, name)
    if name in ("json_path", "parse_link_header", "with_params"):
        from active_data_flow.connectors.http import paging

        return getattr(paging, name)
    if name == "retry_after_seconds":
        from active_data_flow.retry import retry_after_seconds

        return retry_after_seconds
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
