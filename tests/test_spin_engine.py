"""The local Spin host's wasmtime engine: Spin's pooling-allocator settings and the reaper.

(The effect on real components — instances reset in place, no page faults — is checked in
``test_spin_components.py`` with the built components.)
"""

from __future__ import annotations

import threading
import time

import pytest
import wasmtime  # scripts/spin-setup installs it

from active_data_flow.spin_app.engine import EngineSettings, MiB, Reaper, engine_for


def test_settings_come_from_spins_own_environment_variables() -> None:
    settings = EngineSettings.from_env({
        "SPIN_WASMTIME_POOLING": "1",
        "SPIN_WASMTIME_INSTANCE_COUNT": "8",
        "SPIN_WASMTIME_LINEAR_MEMORY_KEEP_RESIDENT": str(2 * MiB),
        "SPIN_WASMTIME_TABLE_KEEP_RESIDENT": "0",
    })
    assert settings == EngineSettings(pooling=True, instances=8, keep_resident=2 * MiB, table_keep_resident=0)
    assert EngineSettings.from_env({}) == EngineSettings()
    assert EngineSettings.from_env({"SPIN_WASMTIME_POOLING": "0"}).pooling is False


@pytest.mark.parametrize(("name", "value", "message"), [
    ("SPIN_WASMTIME_POOLING", "yes", "only 1 or 0"),
    ("SPIN_WASMTIME_INSTANCE_COUNT", "many", "whole number"),
    ("SPIN_WASMTIME_LINEAR_MEMORY_KEEP_RESIDENT", "-1", "must not be negative"),
])
def test_a_bad_setting_is_refused_naming_the_variable(name: str, value: str, message: str) -> None:
    with pytest.raises(ValueError, match=f"{name}=.*{message}"):
        EngineSettings.from_env({name: value})


def test_hosts_with_the_same_settings_share_one_engine() -> None:
    settings = EngineSettings(instances=3)
    engine, effective = engine_for(wasmtime, settings)
    again, _ = engine_for(wasmtime, EngineSettings(instances=3))
    assert again is engine
    assert effective.pooling is True
    assert engine_for(wasmtime, EngineSettings(instances=3, pooling=False))[0] is not engine


def test_a_pool_too_big_for_the_address_space_falls_back_to_on_demand_allocation() -> None:
    # a million instances of 8 memories of 4 GiB each: far more than 47 bits of address space
    engine, effective = engine_for(wasmtime, EngineSettings(instances=1_000_000))
    assert effective.pooling is False and effective.keep_resident == 0
    store = wasmtime.Store(engine)  # the fallback engine works
    wasmtime.Memory(store, wasmtime.MemoryType(wasmtime.Limits(1, None)))


class _Store:
    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.closed_by: str | None = None

    def close(self) -> None:
        time.sleep(self.delay)
        self.closed_by = threading.current_thread().name


def test_the_reaper_drops_stores_on_its_own_thread() -> None:
    reaper = Reaper()
    stores = [_Store(0.01) for _ in range(3)]
    for store in stores:
        reaper.drop(store, limit=4)
    assert reaper.wait(5)
    assert {s.closed_by for s in stores} == {"spin-instance-reaper"}


def test_beyond_its_limit_the_caller_drops_the_store_itself() -> None:
    reaper = Reaper()
    slow = _Store(0.2)
    reaper.drop(slow, limit=1)
    now = _Store()
    reaper.drop(now, limit=1)  # one is already waiting: no room
    assert now.closed_by == threading.current_thread().name
    reaper.drop(_Store(), limit=0)  # no spare slots at all (an on-demand engine)
    assert reaper.wait(5)
    assert slow.closed_by == "spin-instance-reaper"


def test_the_host_command_refuses_a_bad_setting_before_loading_anything(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from active_data_flow.spin_app.host import main

    monkeypatch.setenv("SPIN_WASMTIME_LINEAR_MEMORY_KEEP_RESIDENT", "32M")
    assert main(["cron", "no-such.wasm"]) == 2
    assert "SPIN_WASMTIME_LINEAR_MEMORY_KEEP_RESIDENT='32M': expected a whole number" in capsys.readouterr().err
