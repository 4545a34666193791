"""Cron flows through a real ``adf serve`` app: the API and the dashboard accept a schedule,
refuse a bad one (422 naming the field) and show the next run with its zone's offset."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_dashboard import Server, _serve, csrf_of
from test_web_api import Api, _running

from active_data_flow.cron import parse_cron

TOKEN = "dash-token-cron"


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    with _running(tmp_path, f"sqlite:///{tmp_path / 'adf.db'}") as running:
        yield running


def test_the_api_creates_a_cron_flow_and_shows_its_next_run_with_the_zones_offset(api: Api) -> None:
    body = {
        "name": "berlin",
        "configuration": api.spec("berlin"),
        "schedule": {"cron": "0 6 * * 1-5", "timezone": "Europe/Berlin"},
    }
    resp = api.client.post(f"{api.url}/api/flows", json=body)
    assert resp.status_code == 201, resp.text
    flow = resp.json()
    assert (
        flow["schedule"] == {"cron": "0 6 * * 1-5", "timezone": "Europe/Berlin"}
        and flow["run_interval"] is None
    )
    expected = parse_cron("0 6 * * 1-5", "Europe/Berlin").next_after(dt.datetime.now(dt.UTC))
    assert flow["next_run"] == expected.isoformat()
    assert (
        dt.datetime.fromisoformat(flow["next_run"]).utcoffset()
        == expected.astimezone(zoneinfo.ZoneInfo("Europe/Berlin")).utcoffset()
    )
    # not due at once: a heartbeat now runs nothing
    assert api.heartbeat()["flows_triggered"] == 0
    # switch to an interval and back
    resp = api.client.patch(f"{api.url}/api/flows/berlin", json={"run_interval": 120})
    assert resp.status_code == 200 and resp.json()["schedule"] is None
    resp = api.client.patch(f"{api.url}/api/flows/berlin", json={"schedule": {"cron": "@daily"}})
    assert resp.status_code == 200 and resp.json()["schedule"] == {"cron": "@daily", "timezone": "UTC"}
    assert resp.json()["next_run"].endswith("T00:00:00+00:00")
    interval_flow = api.create("every-minute")
    assert interval_flow["next_run"] is not None and interval_flow["schedule"] is None


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        ({"schedule": {"cron": "0 6 * *"}}, "schedule.cron: cron '0 6 * *' has 4 field(s)"),
        ({"schedule": {"cron": "0 6 * * MON-XYZ"}}, "schedule.cron: day-of-week 'MON-XYZ'"),
        (
            {"schedule": {"cron": "0 6 * * *", "timezone": "Europe/Atlantis"}},
            "schedule.timezone: unknown time zone",
        ),
        ({"schedule": {"cron": "0 6 * * *"}, "run_interval": 60}, "not both"),
        ({}, "run_interval: is required"),
    ],
)
def test_the_api_refuses_a_bad_schedule_with_422(api: Api, extra: dict[str, object], fragment: str) -> None:
    body = {"name": "bad", "configuration": api.spec("bad"), **extra}
    resp = api.client.post(f"{api.url}/api/flows", json=body)
    assert resp.status_code == 422, resp.text
    assert fragment in resp.text
    assert api.flows() == []


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with _serve(tmp_path_factory.mktemp("cron-dashboard"), api_token=TOKEN) as running:
        yield running


def _login(server: Server, client: object) -> str:
    import httpx

    assert isinstance(client, httpx.Client)
    page = client.get("/ui/login")
    resp = client.post("/ui/login", data={"token": TOKEN, "csrf_token": csrf_of(page), "next": "/ui/flows"})
    assert resp.status_code == 303, resp.text
    return csrf_of(client.get("/ui/flows"))


CONFIG = '{"source": {"type": "memory", "records": [{"id": 1}]}, "sink": {"type": "memory"}}'


def test_the_dashboard_form_takes_a_cron_schedule_and_shows_the_next_run(server: Server) -> None:
    with server.client() as client:
        csrf = _login(server, client)
        resp = client.post(
            "/ui/new-flow",
            data={
                "csrf_token": csrf,
                "name": "ny",
                "format": "json",
                "configuration": CONFIG,
                "run_interval": "",
                "schedule_cron": "30 2 * * *",
                "schedule_timezone": "America/New_York",
                "enabled": "on",
            },
        )
        assert resp.status_code == 303, resp.text
        flow = server.store.get_flow("ny")
        assert flow.schedule == {"cron": "30 2 * * *", "timezone": "America/New_York"}
        nxt = flow.next_run
        assert nxt is not None
        page = client.get("/ui/flows/ny")
        assert "<code>30 2 * * *</code> in America/New_York" in page.text
        assert nxt.isoformat() in page.text
        assert 'value="30 2 * * *"' in page.text and 'value=""' in page.text  # the form shows the schedule
        listing = client.get("/ui/flows")
        assert "<code>30 2 * * *</code>" in listing.text and nxt.strftime("%a %H:%M %z") in listing.text


def test_the_dashboard_form_refuses_a_bad_schedule_and_saves_nothing(server: Server) -> None:
    with server.client() as client:
        csrf = _login(server, client)
        for cron, zone, interval, problem in [
            ("0 6 * *", "UTC", "", "has 4 field(s)"),
            ("0 6 * * *", "Mars/Base", "", "schedule.timezone: unknown time zone"),
            ("0 6 * * *", "UTC", "60", "not both"),
        ]:
            resp = client.post(
                "/ui/new-flow",
                data={
                    "csrf_token": csrf,
                    "name": "refused",
                    "format": "json",
                    "configuration": CONFIG,
                    "run_interval": interval,
                    "schedule_cron": cron,
                    "schedule_timezone": zone,
                },
            )
            assert resp.status_code == 422, resp.text
            assert problem in resp.text
            assert f'value="{cron}"' in resp.text  # what was typed stays in the form
        assert "refused" not in {f.name for f in server.store.list_flows()}
