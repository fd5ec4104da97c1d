"""The scale benchmark's seeding plan: clone names, renamed texts, and a chain the registry's verifier accepts."""

from __future__ import annotations

import itertools

from sqlalchemy import Engine
from sqlmodel import Session, SQLModel, col, create_engine, select

from bench.scale_plan import TEMPLATE, AuditEvent, chain_hash, clone_events, clone_name, clone_plan
from registry_store.audit import GENESIS_HASH, Actor, append_event, verify_chain
from registry_store.tables import AuditEventRow, AuditHeadRow


def _audit_engine() -> Engine:
    """SQLite in memory with the audit tables only."""
    engine = create_engine("sqlite://")
    tables = SQLModel.metadata.tables
    SQLModel.metadata.create_all(engine, tables=[tables["audit_events"], tables["audit_head"]])
    return engine


def _template_events() -> list[AuditEvent]:
    """Two events of the template as the registry appends them (SQLite in memory), read back."""
    engine = _audit_engine()
    with Session(engine) as session:
        session.add(AuditHeadRow(id=1, seq=0, hash=GENESIS_HASH))
        actor = Actor("admin", frozenset({"admin"}), request_id="r1")
        append_event(session, actor=actor, action="create_registered_model", timestamp=1, model_name=TEMPLATE,
                     subject=f"registered_model:{TEMPLATE}", after={"name": TEMPLATE})
        append_event(session, actor=actor, action="create_model_version", timestamp=2, model_name=TEMPLATE,
                     version=1, subject=f"model_version:{TEMPLATE}/1",
                     after={"storage_location": f"file:///a/{TEMPLATE}/" + "a" * 32})
        session.commit()
        rows = session.exec(select(AuditEventRow).order_by(col(AuditEventRow.seq))).all()
        return [AuditEvent(**{name: getattr(row, name) for name in AuditEvent.__dataclass_fields__}) for row in rows]


def test_names_are_fixed_width_and_the_template_is_model_zero() -> None:
    assert TEMPLATE == "scale-0000"
    assert clone_name(999) == "scale-0999"


def test_the_plan_gives_every_clone_fresh_artifact_ids() -> None:
    ids = (f"{n:032x}" for n in itertools.count(1))
    clones = list(clone_plan(3, ["a" * 32, "b" * 32], new_id=lambda: next(ids)))
    assert [c.name for c in clones] == ["scale-0001", "scale-0002"]
    assert clones[0].rename(f"file:///root/{TEMPLATE}/{'b' * 32}") == f"file:///root/scale-0001/{2:032x}"
    assert len({new for c in clones for new in c.artifact_ids.values()}) == 4


def test_cloned_events_continue_the_chain_and_the_registry_verifies_them() -> None:
    template = _template_events()
    assert chain_hash(template[1].chained()) == template[1].hash  # the documented rule is the registry's
    clones = list(clone_plan(3, ["a" * 32]))
    events = list(clone_events(template, clones, head_seq=2, head_hash=template[-1].hash))
    assert [e.seq for e in events] == [3, 4, 5, 6]
    assert [e.model_name for e in events] == ["scale-0001", "scale-0001", "scale-0002", "scale-0002"]
    assert clones[1].artifact_ids["a" * 32] in events[3].after and "a" * 32 not in events[3].after
    engine = _audit_engine()
    with Session(engine) as session:
        for event in [*template, *events]:
            session.add(AuditEventRow(**{name: getattr(event, name) for name in AuditEvent.__dataclass_fields__}))
        session.add(AuditHeadRow(id=1, seq=events[-1].seq, hash=events[-1].hash))
        session.commit()
        assert verify_chain(session).ok
        tampered = session.get(AuditEventRow, 5)
        assert tampered is not None
        tampered.subject = "model_version:scale-0009/1"
        session.add(tampered)
        session.commit()
        assert verify_chain(session).first_bad_seq == 5
