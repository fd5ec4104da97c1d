"""PostgreSQL is stopped (``pg_ctl stop -m immediate``) while the apply's transaction runs, then started again:
the apply fails, Temporal retries it, and it lands exactly once.

The test holds the candidates' model rows locked, so each apply is caught inside its transaction (it
has locked its promotion row and waits for the model row) when the database goes down. The server is
the test's own: restarting the session's PostgreSQL would break other tests' connections.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowExecutionStatus

from registry_store.entities import Promotion
from tests.faults.harness import (
    RESUME_S,
    Engine,
    until,
)
from tests.fixtures import postgres

pytestmark = [pytest.mark.faults, pytest.mark.postgres]

PROMOTIONS = 2


@pytest.fixture
def own_postgres() -> Iterator[postgres.PostgresServer]:
    server = postgres.start_server(durable=True)  # the stop is a crash: what was committed must survive it
    yield server
    postgres.stop_server(server)


@pytest.fixture
def engine(own_postgres: postgres.PostgresServer, tmp_path: Path) -> Iterator[Engine]:
    started = Engine.create(tmp_path, own_postgres.create_database())
    yield started
    started.close()


def _waiting_for_lock(server: postgres.PostgresServer, database: str) -> int:
    """How many sessions of ``database`` wait for a row lock on ``registered_models`` (the applies)."""
    with server.connect(database) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock' "
            "AND query ILIKE %s", (database, "%registered_models%FOR UPDATE%")).fetchone()
    return int(row[0]) if row else 0


async def test_database_stopped_during_apply(engine: Engine, own_postgres: postgres.PostgresServer) -> None:
    promotions = await engine.promotions_awaiting_sign_off("applying", PROMOTIONS)
    models = [promotion.model_name for promotion in promotions]

    database = engine.settings.resolved_database_url().rsplit("/", 1)[-1]
    lock = own_postgres.connect(database, autocommit=False)
    try:
        lock.execute("SELECT id FROM registered_models WHERE name = ANY(%s) FOR UPDATE", (models,))
        for promotion in promotions:
            await until(lambda p=promotion: engine.signed_off(p), f"{promotion.model_name} signed off")
        await until(lambda: _waiting_for_lock(own_postgres, database) == PROMOTIONS,
                    "every apply waiting inside its transaction")
        own_postgres.stop()
    finally:
        with contextlib.suppress(psycopg.Error):
            lock.close()
    own_postgres.start()
    restarted = time.monotonic()
    client = await engine.services.promotions.client()

    async def all_finished() -> bool:
        states = [await client.get_workflow_handle(p.workflow_id).describe() for p in promotions]
        return all(s.status != WorkflowExecutionStatus.RUNNING for s in states)

    await until(all_finished, "every promotion finished after the database restart", timeout=RESUME_S)
    print(f"\n[postgres restart] restart -> all finished {time.monotonic() - restarted:.1f} s")
    for promotion in promotions:
        assert await _apply_attempts(engine, promotion) >= 2, "the apply was not interrupted by the restart"
    assert engine.exactly_once_problems(promotions) == {}


async def _apply_attempts(engine: Engine, promotion: Promotion) -> int:
    """The attempt of ``apply_promotion`` that completed (from the workflow's history)."""
    client = await engine.services.promotions.client()
    history = await client.get_workflow_handle(promotion.workflow_id).fetch_history()
    scheduled = {e.event_id for e in history.events
                 if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
                 and e.activity_task_scheduled_event_attributes.activity_type.name == "apply_promotion"}
    return max((e.activity_task_started_event_attributes.attempt for e in history.events
                if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
                and e.activity_task_started_event_attributes.scheduled_event_id in scheduled), default=0)
