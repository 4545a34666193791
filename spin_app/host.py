"""The local Spin 3 host, by its historical name: re-exports :mod:`active_data_flow.spin_app.local_host`.

The host itself lives in the :mod:`active_data_flow.spin_app.local_host` package (its docstring describes what
it provides); this module keeps ``from active_data_flow.spin_app.host import …`` and the command line working::

    python -m active_data_flow.spin_app.host serve build/spin/http.wasm --port 3000 [--var name=value ...] [--engine node]
    python -m active_data_flow.spin_app.host cron  build/spin/cron.wasm [--every 10] [--count N]
    python -m active_data_flow.spin_app.host redis build/spin/redis.wasm --channel orders-in [--address redis://127.0.0.1:6379]
    python -m active_data_flow.spin_app.host mqtt  build/spin/mqtt.wasm --topic 'sensors/#' [--address mqtt://127.0.0.1:1883]
    python -m active_data_flow.spin_app.host message build/spin/mqtt.wasm --topic sensors/a --payload '{"records": []}'
"""

from __future__ import annotations

import sys

from active_data_flow.spin_app.local_host.command import main
from active_data_flow.spin_app.local_host.component import ComponentHost, GuestError
from active_data_flow.spin_app.local_host.component import default_cache_dir as default_cache_dir
from active_data_flow.spin_app.local_host.http_server import ROOT as ROOT
from active_data_flow.spin_app.local_host.http_server import SERVE_JS as SERVE_JS
from active_data_flow.spin_app.local_host.http_server import HttpHost
from active_data_flow.spin_app.local_host.http_server import WasmtimeHttpServer as WasmtimeHttpServer
from active_data_flow.spin_app.local_host.state import SpinState
from active_data_flow.spin_app.local_host.state import load_variables as load_variables
from active_data_flow.spin_app.local_host.triggers import MqttBridge as MqttBridge

__all__ = ["ComponentHost", "GuestError", "HttpHost", "SpinState", "main"]

if __name__ == "__main__":
    sys.exit(main())
