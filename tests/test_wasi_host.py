"""The Python objects behind the wasmtime HTTP host's WASI (spin_app/wasi_host.py).

The interfaces themselves are exercised by the built HTTP component in
tests/test_spin_components.py; these are the host-side rules a component cannot show.
"""

from __future__ import annotations

import time

import pytest

from active_data_flow.spin_app.wasi_host import (
    Fields,
    InputStream,
    OutgoingBody,
    OutgoingResponse,
    Pollable,
    ResponseBodyStream,
    WasiTrap,
    _header_problem,
)


def test_a_response_body_written_before_the_headers_went_out_is_sent_first_and_in_order() -> None:
    sent: list[bytes] = []
    finished: list[bool] = []
    response = OutgoingResponse(Fields([("content-type", b"application/x-ndjson")]))
    response.body = OutgoingBody(ResponseBodyStream())
    stream = response.body.stream
    stream.write(b'{"event": "start"}\n')  # the component may write before it sets the response
    response.attach(sent.append, lambda: finished.append(True))
    stream.write(b'{"event": "summary"}\n')
    assert sent == [b'{"event": "start"}\n', b'{"event": "summary"}\n'] and finished == []


def test_a_body_finished_before_the_host_attached_ends_the_response_on_attach() -> None:
    stream = ResponseBodyStream()
    stream.write(b"all of it")
    stream.finished = True
    sent: list[bytes] = []
    ended: list[bool] = []
    stream.attach(sent.append, lambda: ended.append(True))
    assert sent == [b"all of it"] and ended == [True]


def test_headers_follow_wasi_http_rules() -> None:
    assert _header_problem("content-type", immutable=False) is None
    assert _header_problem("bad header", immutable=False).tag == "invalid-syntax"  # type: ignore[union-attr]
    assert _header_problem("Transfer-Encoding", immutable=False).tag == "forbidden"  # type: ignore[union-attr]
    assert _header_problem("x-ok", immutable=True).tag == "immutable"  # type: ignore[union-attr]
    fields = Fields([("X-Many", b"1"), ("x-many", b"2"), ("other", b"3")])
    assert fields.get("X-MANY") == [b"1", b"2"]  # names are case-insensitive, values kept in order


def test_streams_end_with_closed() -> None:
    stream = InputStream(b"abcdef")
    assert (stream.read(4), stream.read(4), stream.read(4)) == (b"abcd", b"ef", b"")
    assert stream.closed
    chunks = iter([b"x", b"y"])
    produced = InputStream(reader=lambda n: next(chunks, b""))
    assert (produced.read(10), produced.read(10), produced.read(10), produced.closed) == (b"x", b"y", b"", True)


def test_a_pollable_nothing_can_make_ready_traps_instead_of_hanging_the_host() -> None:
    with pytest.raises(WasiTrap, match="cannot happen"):
        Pollable(lambda: False).block()
    deadline = time.monotonic() + 0.05
    timer = Pollable(lambda: time.monotonic() >= deadline, lambda: time.sleep(max(0.0, deadline - time.monotonic())))
    timer.block()
    assert timer.ready()
