"""The cron component (spin-trigger-cron, ``handle-cron-event``): a tick → the heartbeat.

The due flows of the schedule (Spin SQLite; the bundled flows with ``runtime.interval_seconds``
or a cron route are registered in it) run here, one after another, in sync mode.
"""

from __future__ import annotations

import time

import cron_world
from cron_world.imports import cron_types
from cron_world.types import Err

from active_data_flow.handlers.invoke import handle_cron
from active_data_flow.handlers.settings import Settings
from active_data_flow.spin_app import runtime


class CronWorld(cron_world.CronWorld):  # type: ignore[misc]
    def handle_cron_event(self, metadata: cron_types.Metadata) -> None:
        host = runtime.host("cron")
        try:
            store = runtime.schedule_store()
        except Exception as exc:
            raise Err(cron_types.Error_Other(f"the schedule store could not be opened: {type(exc).__name__}: {exc}")) from None
        # The event's timestamp is the scheduled second (truncated); a flow registered just now
        # is due "now", so judge the schedule at the later of the two.
        when = max(float(metadata.timestamp), time.time())
        result = handle_cron(host, store, Settings(state_dir="/tmp/adf"), timestamp=when)
        if result.get("status") == "error":
            raise Err(cron_types.Error_Other(f"{result.get('error')} (error_id {result.get('error_id')})"))
