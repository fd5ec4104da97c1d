"""The hash-chained audit log (DESIGN §3, invariant 5): verification catches edits and deletions,
and concurrent writers extend one gap-free chain, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.exc import DBAPIError
from sqlmodel import col, select

from registry_store.audit import GENESIS_HASH, _event_hash, verify_chain
from registry_store.errors import PermissionDeniedError
from registry_store.tables import AuditEventRow, AuditHeadRow
from tests.integration.helpers import DATABASES, Registry, build_registry, database_url

THREADS = 8
ROUNDS_PER_THREAD = 3


@pytest.fixture(params=DATABASES)
def reg(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Registry]:
    registry = build_registry(tmp_path, database_url(request, tmp_path))
    yield registry
    registry.services.close()


def mutate(reg: Registry, name: str) -> None:
    """A series of different mutations on one model (8 audit events)."""
    svc = reg.svc
    svc.models.create_registered_model(reg.engineer, name=name)
    svc.registration.create_model_version(reg.engineer, name=name, source=str(reg.artifact()))
    svc.registration.create_model_version(reg.engineer, name=name, source=str(reg.artifact()))
    svc.stages.transition_stage(reg.engineer, name=name, version=1, stage="Staging")
    svc.stages.transition_stage(reg.admin, name=name, version=2, stage="Production")
    svc.aliases.set_alias(reg.engineer, name=name, alias="candidate", version=1)
    svc.versions.set_model_version_tag(reg.engineer, name=name, version=1, key="k", value="v")
    svc.versions.delete_model_version(reg.engineer, name=name, version=1)


EVENTS_PER_MUTATE = 8


@pytest.fixture
def chained(reg: Registry) -> Registry:
    """A registry whose log holds the user set-up events plus two series of mutations."""
    mutate(reg, "model-a")
    mutate(reg, "model-b")
    return reg


def test_the_chain_verifies_after_a_series_of_mutations(chained: Registry) -> None:
    result = chained.svc.audit.verify_audit_chain(chained.viewer)

    assert result.ok, result.problem
    assert result.events_checked == chained.audit_count() >= 2 * EVENTS_PER_MUTATE
    assert result.first_bad_seq is None


def test_an_empty_registry_starts_its_chain_at_the_genesis_hash(reg: Registry) -> None:
    first = reg.svc.audit.list_audit_events(reg.viewer, limit=1)[0]

    assert (first.seq, first.prev_hash) == (1, GENESIS_HASH)


@pytest.fixture
def attacked(chained: Registry) -> Registry:
    """The chained registry after someone with full database rights removed the append-only guards."""
    chained.drop_audit_guards()
    return chained


@pytest.mark.parametrize(
    "statement", ["UPDATE audit_events SET actor = 'mallory' WHERE seq = 2", "DELETE FROM audit_events WHERE seq = 2"]
)
def test_the_database_refuses_to_edit_or_delete_audit_events(chained: Registry, statement: str) -> None:
    with pytest.raises(DBAPIError, match="append-only"):
        chained.execute(statement)

    assert chained.svc.audit.verify_audit_chain(chained.viewer).ok


def test_editing_an_event_with_sql_breaks_the_chain_at_that_event(attacked: Registry) -> None:
    assert attacked.execute("UPDATE audit_events SET actor = 'mallory' WHERE seq = 2") == 1

    result = attacked.svc.audit.verify_audit_chain(attacked.viewer)

    assert not result.ok
    assert result.first_bad_seq == 2
    assert result.events_checked == 1


def test_editing_an_event_and_recomputing_its_hash_breaks_the_link_of_the_next_event(attacked: Registry) -> None:
    attacked.execute("UPDATE audit_events SET actor = 'mallory' WHERE seq = 2")
    with attacked.services.db.read() as session:  # the attacker knows the hash recipe
        row = session.exec(select(AuditEventRow).where(col(AuditEventRow.seq) == 2)).one()
        assert row.actor == "mallory"
        forged_hash = _event_hash(row)
    attacked.execute("UPDATE audit_events SET hash = :h WHERE seq = 2", h=forged_hash)

    result = attacked.svc.audit.verify_audit_chain(attacked.viewer)

    assert not result.ok
    assert result.first_bad_seq == 3


def test_deleting_the_last_event_breaks_the_chain(attacked: Registry) -> None:
    last = attacked.audit_count()
    assert attacked.execute("DELETE FROM audit_events WHERE seq = :s", s=last) == 1

    result = attacked.svc.audit.verify_audit_chain(attacked.viewer)

    assert not result.ok
    assert result.first_bad_seq == last


def test_deleting_a_middle_event_breaks_the_chain_where_the_gap_is(attacked: Registry) -> None:
    middle = attacked.audit_count() // 2
    assert attacked.execute("DELETE FROM audit_events WHERE seq = :s", s=middle) == 1

    result = attacked.svc.audit.verify_audit_chain(attacked.viewer)

    assert not result.ok
    assert result.first_bad_seq == middle + 1


def test_mutations_from_eight_concurrent_threads_form_one_gap_free_unforked_chain(reg: Registry) -> None:
    before = reg.audit_count()
    barrier = threading.Barrier(THREADS, timeout=60)

    def worker(index: int) -> None:
        barrier.wait()
        for round_ in range(ROUNDS_PER_THREAD):
            mutate(reg, f"model-{index}-{round_}")

    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        for future in [pool.submit(worker, i) for i in range(THREADS)]:
            future.result(timeout=240)

    events = reg.svc.audit.list_audit_events(reg.viewer, limit=10_000)
    assert len(events) == before + THREADS * ROUNDS_PER_THREAD * EVENTS_PER_MUTATE
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert [e.prev_hash for e in events] == [GENESIS_HASH] + [e.hash for e in events[:-1]]
    assert len({e.hash for e in events}) == len(events)
    per_model = {e.model_name for e in events if e.model_name}
    assert len(per_model) == THREADS * ROUNDS_PER_THREAD
    result = reg.svc.audit.verify_audit_chain(reg.viewer)
    assert result.ok, result.problem
    assert result.events_checked == len(events)


def test_verification_is_not_fooled_by_an_event_committed_while_it_runs(chained: Registry) -> None:
    """A writer that commits between verify's last event query and its read of the chain head
    must not make an intact chain look tampered with (on PostgreSQL each statement of a
    READ COMMITTED transaction sees a newer snapshot)."""
    with chained.services.db.read() as session:
        read_head = session.get

        def get_after_a_concurrent_commit(*args: Any, **kwargs: Any) -> Any:
            if args and args[0] is AuditHeadRow:
                chained.svc.models.set_registered_model_tag(chained.engineer, name="model-a", key="k", value="v")
            return read_head(*args, **kwargs)

        session.get = get_after_a_concurrent_commit  # type: ignore[method-assign]
        result = verify_chain(session)

    assert result.ok, f"seq {result.first_bad_seq}: {result.problem}"
    assert chained.svc.audit.verify_audit_chain(chained.viewer).ok


def test_verification_running_alongside_concurrent_writers_never_reports_tampering(chained: Registry) -> None:
    writers, verifications, max_writes = 4, 100, 2_000
    done = threading.Event()
    barrier = threading.Barrier(writers + 1, timeout=60)

    def write(index: int) -> None:
        barrier.wait()
        for n in range(max_writes):
            if done.is_set():
                return
            chained.svc.models.set_registered_model_tag(chained.engineer, name="model-a", key=f"w{index}", value=str(n))

    with ThreadPoolExecutor(max_workers=writers) as pool:
        futures = [pool.submit(write, i) for i in range(writers)]
        barrier.wait()
        try:
            results = [chained.svc.audit.verify_audit_chain(chained.viewer) for _ in range(verifications)]
        finally:
            done.set()
        for future in futures:
            future.result(timeout=120)

    alarms = [(r.first_bad_seq, r.problem) for r in results if not r.ok]
    assert alarms == [], f"{len(alarms)} of {verifications} verifications of an intact chain failed: {alarms[:3]}"
    assert chained.svc.audit.verify_audit_chain(chained.viewer).ok


def test_a_tracking_write_is_one_chained_event_and_needs_an_engineer(reg: Registry) -> None:
    route = "POST /api/2.0/mlflow/runs/log-metric"
    with pytest.raises(PermissionDeniedError):
        reg.svc.audit.record_tracking_write(reg.viewer, route, run_id="r1")
    reg.svc.audit.record_tracking_write(reg.engineer, route, run_id="r1", experiment_id="4")
    reg.svc.audit.record_tracking_write(reg.engineer, "POST /api/2.0/mlflow/experiments/create", experiment_id="5")

    events = reg.svc.audit.list_audit_events(reg.viewer, newest_first=True, limit=2)
    assert [(e.actor, e.action, e.subject, e.model_name) for e in events] == [
        (reg.engineer.name, "tracking_write", "experiment:5", ""),
        (reg.engineer.name, "tracking_write", "run:r1", ""),
    ]
    assert events[1].after == {"route": route, "run_id": "r1", "experiment_id": "4", "model_id": ""}
    assert reg.svc.audit.verify_audit_chain(reg.viewer).ok
