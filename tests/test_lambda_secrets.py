"""active_data_flow.lambda_app.secrets: the schedule database URL comes from Secrets Manager or SSM (moto's
server on 127.0.0.1, over real HTTP), is read once per execution environment, and never
reaches the environment, a log line or an error message; no configuration is refused.

GetSecretValue / GetParameter calls are counted with botocore's own event hooks on the
session the module's clients come from.
"""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from flowlib.scheduling import file_flow, pg_database
from lambda_env import Context, event
from moto_endpoint import moto_endpoint

from active_data_flow.handlers.schedule.sql import SqlScheduleStore
from active_data_flow.lambda_app import schedule, secrets
from active_data_flow.lambda_app.host import logger

PASSWORD = "pw-Zq8v!never-logged"
URL = f"postgresql+psycopg://adf:{PASSWORD}@db.internal:5432/adf"


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with moto_endpoint(export=True) as (url, _mp):
        yield url


@pytest.fixture(autouse=True)
def clean(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in (secrets.ENV_SECRET, secrets.ENV_PARAMETER, secrets.ENV_URL):
        monkeypatch.delenv(name, raising=False)
    secrets.forget()
    yield
    secrets.forget()


class Calls:
    """botocore ``before-call`` events of the default boto3 session (the one the module uses)."""

    def __init__(self) -> None:
        boto3.setup_default_session()
        self.names: list[str] = []
        session: Any = boto3.DEFAULT_SESSION
        session.events.register("before-call.*.*", self._seen)

    def _seen(self, model: Any, **_: Any) -> None:
        self.names.append(model.name)

    def count(self, name: str) -> int:
        return self.names.count(name)


@pytest.fixture
def calls() -> Iterator[Calls]:
    yield Calls()
    boto3.DEFAULT_SESSION = None


def _secret(name: str, value: str) -> str:
    arn: str = boto3.client("secretsmanager").create_secret(Name=name, SecretString=value)["ARN"]
    return arn


def _parameter(name: str, value: str) -> str:
    boto3.client("ssm").put_parameter(Name=name, Value=value, Type="SecureString", Overwrite=True)
    return name


def _nowhere_in_environment(value: str) -> None:
    assert not [k for k, v in os.environ.items() if value in v], "the URL leaked into os.environ"


# --------------------------------------------------------------------------- resolution


def test_a_secrets_manager_url_is_read_once_and_kept(
    endpoint: str, calls: Calls, monkeypatch: pytest.MonkeyPatch
) -> None:
    arn = _secret("adf/db-once", URL)
    monkeypatch.setenv(secrets.ENV_SECRET, arn)
    assert secrets.database_url() == URL
    assert secrets.database_url() == URL
    assert calls.count("GetSecretValue") == 1
    # a rotated value is not seen by this execution environment until it forgets
    boto3.client("secretsmanager").put_secret_value(SecretId=arn, SecretString=URL.replace("adf:", "adf2:"))
    assert secrets.database_url() == URL
    secrets.forget()
    assert secrets.database_url() == URL.replace("adf:", "adf2:")
    assert calls.count("GetSecretValue") == 2
    _nowhere_in_environment(PASSWORD)


def test_an_ssm_secure_string_is_read_once_and_decrypted(
    endpoint: str, calls: Calls, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(secrets.ENV_PARAMETER, _parameter("/adf/test/database-url", URL))
    for _ in range(3):
        assert secrets.database_url() == URL
    assert calls.count("GetParameter") == 1
    _nowhere_in_environment(PASSWORD)


def test_a_json_secret_gives_its_url_or_the_rds_fields(endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(secrets.ENV_SECRET, _secret("adf/db-json", json.dumps({"url": URL})))
    assert secrets.database_url() == URL
    rds = {"engine": "postgres", "host": "db.cluster.local", "port": 6432, "dbname": "sched",
           "username": "adf", "password": "p@ss/w:rd"}
    monkeypatch.setenv(secrets.ENV_SECRET, _secret("adf/db-rds", json.dumps(rds)))
    assert secrets.database_url() == "postgresql+psycopg://adf:p%40ss%2Fw%3Ard@db.cluster.local:6432/sched"


def test_the_plain_variable_is_kept_for_local_runs_without_any_aws_call(
    calls: Calls, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(secrets.ENV_URL, "sqlite:///local.db")
    assert secrets.database_url() == "sqlite:///local.db"
    assert calls.names == []


# --------------------------------------------------------------------------- refusals


def test_no_configuration_is_refused_with_what_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(secrets.DatabaseUrlError) as err:
        secrets.database_url()
    message = str(err.value)
    assert secrets.ENV_SECRET in message and secrets.ENV_PARAMETER in message and "DatabaseUrlSecretArn" in message


def test_two_sources_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(secrets.ENV_SECRET, "arn:aws:secretsmanager:us-east-1:123456789012:secret:x-AbCdEf")
    monkeypatch.setenv(secrets.ENV_URL, URL)
    with pytest.raises(secrets.DatabaseUrlError, match="configured twice"):
        secrets.database_url()


def test_store_errors_name_the_secret_never_the_value(endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(secrets.ENV_SECRET, "adf/does-not-exist")
    with pytest.raises(secrets.DatabaseUrlError, match="adf/does-not-exist: ResourceNotFoundException"):
        secrets.database_url()
    secrets.forget()
    # a value that is not a URL: refused without echoing it
    monkeypatch.setenv(secrets.ENV_SECRET, _secret("adf/db-garbage", f"user=adf password={PASSWORD}"))
    with pytest.raises(secrets.DatabaseUrlError) as err:
        secrets.database_url()
    assert "does not hold a database URL" in str(err.value) and PASSWORD not in str(err.value)
    monkeypatch.setenv(secrets.ENV_SECRET, _secret("adf/db-partial", json.dumps({"username": "adf", "password": PASSWORD})))
    with pytest.raises(secrets.DatabaseUrlError, match="lacks host") as err:
        secrets.database_url()
    assert PASSWORD not in str(err.value)


def test_the_schedule_function_refuses_an_empty_configuration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADF_FLOWS_DIR", str(tmp_path / "no-flows"))
    monkeypatch.setenv("ADF_STATE_DIR", str(tmp_path / "state"))
    with pytest.raises(secrets.DatabaseUrlError, match="no schedule database is configured"):
        schedule.handler(event("cloudwatch-scheduled-event"), Context())
    # no throwaway schedule was created in the state directory
    assert not (tmp_path / "state" / "adf.db").exists()


# --------------------------------------------------------------------------- the tick, end to end


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """Everything the handlers' logger and the root logger write, at DEBUG."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logger.registered_formatter)
    handlers_logger, root = logging.getLogger(logger.name), logging.getLogger()
    saved = (handlers_logger.level, root.level)
    handlers_logger.addHandler(handler)
    handlers_logger.setLevel(logging.DEBUG)
    root.addHandler(handler)
    root.setLevel(logging.INFO)  # botocore's own DEBUG lines print response bodies: never enable them
    yield out
    handlers_logger.removeHandler(handler)
    root.removeHandler(handler)
    handlers_logger.setLevel(saved[0])
    root.setLevel(saved[1])


@pytest.fixture(params=["secret", "parameter"])
def source(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def tick_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'schedule.db'}"
        return
    with pg_database() as url:
        # trust auth on the test server ignores the password: it is here to be looked for
        with_password = url.replace("postgres@", f"postgres:{PASSWORD}@", 1)
        yield with_password
        store = schedule._stores.pop(with_password, None)
        if store is not None:
            store.close()


def test_the_tick_reads_its_database_from_the_store_once(
    endpoint: str, calls: Calls, source: str, tick_database: str, log_lines: io.StringIO,
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("ADF_FLOWS_DIR", str(tmp_path / "no-flows"))
    monkeypatch.setenv("ADF_STATE_DIR", str(tmp_path / "state"))
    if source == "secret":
        monkeypatch.setenv(secrets.ENV_SECRET, _secret(f"adf/tick-{tmp_path.name}", tick_database))
    else:
        monkeypatch.setenv(secrets.ENV_PARAMETER, _parameter(f"/adf/tick/{tmp_path.name}", tick_database))
    with SqlScheduleStore(tick_database.replace(f":{PASSWORD}@", "@")) as store:
        store.create_flow("a", file_flow(tmp_path / "a.jsonl"), 3600)

    first = schedule.handler(event("cloudwatch-scheduled-event"), Context())
    again = schedule.handler(event("cloudwatch-scheduled-event"), Context())

    assert first["status"] == "ok" and first["flows_triggered"] == 1 and again["flows_triggered"] == 0
    assert len((tmp_path / "a.jsonl").read_text().splitlines()) == 3
    assert calls.count("GetSecretValue" if source == "secret" else "GetParameter") == 1
    _nowhere_in_environment(tick_database)
    logged = log_lines.getvalue() + "".join(capsys.readouterr())
    assert "heartbeat tick" in logged, "the handler's log lines were not captured"
    assert tick_database not in logged and PASSWORD not in logged
