"""The Redis component (world ``spin-redis``): a message → :func:`active_data_flow.handlers.invoke.handle_message`.

Spin's Redis trigger does not say which channel a message came from, so the channel is the
``adf_channel`` variable (one component per channel, see :mod:`active_data_flow.spin_app.manifest`), else the
only Redis route of the bundle. The result is published to the reply channel with outbound
Redis (``adf_redis_address``).
"""

from __future__ import annotations

from spin_sdk.wit import exports
from spin_sdk.wit.imports.redis_types import Error
from spin_sdk.wit.types import Err

from active_data_flow.handlers.invoke import handle_message
from active_data_flow.spin_app import runtime


class InboundRedis(exports.InboundRedis):
    def handle_message(self, message: bytes) -> None:
        host = runtime.host("redis")
        routes = host.routes()
        channel = runtime.redis_channel(routes)
        result = handle_message(host, "redis", channel, bytes(message), routes=routes)
        if result.get("status") == "error" and result.get("code", 500) >= 500 and not result.get("published"):
            raise Err(Error.ERROR)
