"""Schemathesis over the web app's own OpenAPI document: no request it generates — valid or
not — gets a 5xx.

Every operation of ``/openapi.json`` (the heartbeat, the management API, ``/healthz``) is
called with generated examples, schema-conforming and schema-violating (wrong types,
out-of-range integers, NUL characters, odd Unicode), against a real uvicorn server on a
PostgreSQL schedule (the strictest backend: it refuses NUL characters and unencodable text
outright). Bounded and deterministic: ``MAX_EXAMPLES`` per operation and mode, derandomized,
no example database; about a minute (some 1,900 requests).
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from live_server import live_server

from active_data_flow.handlers.schedule.sql import SqlScheduleStore
from active_data_flow.handlers.schedule.store import NotFoundError
from active_data_flow.handlers.settings import Settings

pytestmark = pytest.mark.postgres

PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
API_TOKEN = "fuzz-api-token-0c4f9e2b7a61"
HB_TOKEN = "fuzz-heartbeat-token-5d83a1"
MAX_EXAMPLES = 50

#: status codes seen, over every generated case (printed at the end of the module)
SEEN: Counter[int] = Counter()
STARTED: list[float] = []


@pytest.fixture(scope="module")
def api_store(api_server: tuple[str, SqlScheduleStore]) -> SqlScheduleStore:
    return api_server[1]


@pytest.fixture(scope="module")
def api_url(api_server: tuple[str, SqlScheduleStore]) -> str:
    return api_server[0]


@pytest.fixture(scope="module")
def api_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, SqlScheduleStore]]:
    import psycopg

    root = tmp_path_factory.mktemp("fuzz")
    db = f"adf_fuzz_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{db}"')
    url = f"postgresql://postgres@127.0.0.1:5432/{db}"
    store = SqlScheduleStore(url)
    settings_ = Settings(state_dir=str(root / "state"), database_url=url, api_token=API_TOKEN,
                         heartbeat_token=HB_TOKEN, max_body_bytes=256 * 1024)
    try:
        with live_server(settings_, store) as base:
            STARTED.append(time.monotonic())
            yield base, store
        total = sum(SEEN.values())
        print(f"\nschemathesis: {total} requests in {time.monotonic() - STARTED[0]:.1f} s, "
              f"statuses {dict(sorted(SEEN.items()))}")
    finally:
        store.close()
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


#: every operation of the OpenAPI document (a new one fails the first test until it is listed)
OPERATIONS = [
    "POST /heartbeat",
    "GET /api/flows", "POST /api/flows", "GET /api/flows/{name}", "PATCH /api/flows/{name}",
    "DELETE /api/flows/{name}", "POST /api/flows/{name}/enable", "POST /api/flows/{name}/disable",
    "POST /api/flows/{name}/trigger", "GET /api/runs", "GET /api/runs/{run_id}",
    "GET /api/runs/{run_id}/dead-letters", "POST /api/runs/{run_id}/dead-letters/replay",
    "GET /api/heartbeats", "GET /healthz",
]


@pytest.fixture(scope="module")
def api_schema(api_url: str) -> Any:
    schema = schemathesis.openapi.from_url(f"{api_url}/openapi.json")
    schema.config.generation.update(max_examples=MAX_EXAMPLES, deterministic=True, database="none")
    return schema


def _operations(schema: Any) -> dict[str, Any]:
    return {op.ok().label: op.ok() for op in schema.get_all_operations()}


def test_the_fuzzed_operations_are_all_of_the_document(api_schema: Any) -> None:
    assert sorted(_operations(api_schema)) == sorted(OPERATIONS)


#: a flow and a run that exist (made again before each test), for the "existing" variant
SEED = "seed"


@pytest.fixture
def seeded(api_store: SqlScheduleStore) -> dict[str, Any]:
    """The path parameters of an existing flow (whose configuration holds a masked secret) and run."""
    try:
        api_store.get_flow(SEED)
    except NotFoundError:
        api_store.create_flow(SEED, {
            "source": {"type": "memory", "records": [{"id": 1, "password": "s3cret-in-a-record"}]},
            "sink": {"type": "memory"},
        }, 3600)
    run = api_store.list_runs(flow=SEED, limit=1) or [api_store.create_run(SEED, trigger="manual")]
    return {"name": SEED, "run_id": run[0].id}


#: every operation, with requests the document allows and with requests it does not; those
#: with a path parameter also on the flow and run that exist
CASES = [(label, variant) for label in OPERATIONS for variant in ("positive", "negative")] + [
    (label, "existing") for label in OPERATIONS if "{" in label
]


@pytest.mark.parametrize(("label", "variant"), CASES)
def test_no_generated_request_gets_a_server_error(
    api_schema: Any, api_url: str, seeded: dict[str, Any], label: str, variant: str
) -> None:
    """``positive``: requests the document allows; ``negative``: requests it does not (wrong
    types, missing fields, out-of-range values, bad credentials); ``existing``: allowed
    requests on a flow and a run that exist (operations with a path parameter)."""
    operation = _operations(api_schema)[label]
    path_names = [p.name for p in operation.iter_parameters() if p.location == "path"]
    assert path_names or variant != "existing", f"{label} has no path parameter"
    mode = schemathesis.GenerationMode.NEGATIVE if variant == "negative" else schemathesis.GenerationMode.POSITIVE
    fixed = {k: seeded[k] for k in path_names} if variant == "existing" else None
    # The right credentials, so that the requests reach the routes (a wrong token is refused
    # before the body is read, which would test nothing behind it).
    headers = {"Authorization": f"Bearer {API_TOKEN}", "X-Heartbeat-Token": HB_TOKEN}
    errors: list[str] = []

    @settings(max_examples=MAX_EXAMPLES, derandomize=True, database=None, deadline=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode, path_parameters=fixed))
    def call(case: schemathesis.Case) -> None:
        response = case.call(base_url=api_url, headers=headers, timeout=60)
        SEEN[response.status_code] += 1
        if response.status_code >= 500:
            errors.append(f"{response.status_code} {response.text[:300]}\n  {case.as_curl_command(headers=headers)}")

    try:
        call()
    except Unsatisfiable:
        # an operation without parameters or body (GET /healthz) has no invalid request to make
        assert mode is schemathesis.GenerationMode.NEGATIVE and not operation.body and not list(operation.iter_parameters())
    assert errors == [], "\n".join(errors)
