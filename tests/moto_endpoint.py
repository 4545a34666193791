"""moto's server as a real S3/DynamoDB/SQS endpoint on loopback, for the tests that need AWS."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest


@contextmanager
def moto_endpoint(*, export: bool = False) -> Iterator[tuple[str, pytest.MonkeyPatch]]:
    """Start ``ThreadedMotoServer`` on 127.0.0.1 with fake credentials; yield its URL and the
    monkeypatch holding the environment. ``export`` also sets ``AWS_ENDPOINT_URL`` so every
    boto3 client (core's S3 client, Powertools' DynamoDB client) talks to it."""
    from moto import server as moto_server

    from active_data_flow.connectors import s3 as _s3

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_ACCESS_KEY_ID", "testing")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        mp.setenv("AWS_REGION", "us-east-1")
        mp.delenv("AWS_PROFILE", raising=False)
        server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        try:
            url = f"http://127.0.0.1:{server._server.server_port}"  # the real port chosen for port=0
            if export:
                mp.setenv("AWS_ENDPOINT_URL", url)
            yield url, mp
        finally:
            server.stop()
            _s3._clients.clear()
