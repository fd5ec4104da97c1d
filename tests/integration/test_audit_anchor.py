"""The signed audit anchor: with the append-only triggers dropped, a re-hashed or truncated chain still fails."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlmodel import col, select

from registry_store.audit import _event_hash
from registry_store.audit_anchor import ANCHOR_FILE, AuditAnchor
from registry_store.entities import AuditVerification
from registry_store.server_key import KEY_FILE, ServerKey
from registry_store.tables import AuditEventRow
from tests.integration.helpers import DATABASES, Registry, build_registry, database_url


@pytest.fixture(params=DATABASES)
def reg(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Registry]:
    registry = build_registry(tmp_path, database_url(request, tmp_path))
    registry.versions("anchored", 3)
    yield registry
    registry.services.close()


def verify(reg: Registry) -> AuditVerification:
    return reg.svc.audit.verify_audit_chain(reg.viewer, reg.services.audit_anchor)


def rehash_from(reg: Registry, seq: int) -> None:
    """Recompute every hash and link from ``seq`` on, and the head: what knowing the recipe allows."""
    with reg.services.db.read() as session:
        rows = session.exec(select(AuditEventRow).order_by(col(AuditEventRow.seq))).all()
    prev = rows[seq - 2].hash if seq > 1 else None
    for row in rows[seq - 1:]:
        row.prev_hash = prev if prev is not None else row.prev_hash
        row.hash = _event_hash(row)
        reg.execute("UPDATE audit_events SET prev_hash = :p, hash = :h WHERE seq = :s",
                    p=row.prev_hash, h=row.hash, s=row.seq)
        prev = row.hash
    reg.execute("UPDATE audit_head SET seq = :s, hash = :h", s=rows[-1].seq, h=prev)


def test_a_re_hashed_chain_verifies_alone_but_not_against_the_anchor(reg: Registry) -> None:
    assert verify(reg).ok
    reg.drop_audit_guards()
    reg.execute("UPDATE audit_events SET actor = 'mallory' WHERE seq = 2")
    rehash_from(reg, 2)
    assert reg.svc.audit.verify_audit_chain(reg.viewer).ok  # the chain alone is fooled
    result = verify(reg)
    assert not result.ok and "re-hashed" in result.problem
    assert result.first_bad_seq == reg.audit_count()


def test_deleting_the_newest_event_and_moving_the_head_back_is_caught(reg: Registry) -> None:
    assert verify(reg).ok
    last = reg.audit_count()
    reg.drop_audit_guards()
    reg.execute("DELETE FROM audit_events WHERE seq = :s", s=last)
    previous = reg.scalar("SELECT hash FROM audit_events WHERE seq = :s", s=last - 1)
    reg.execute("UPDATE audit_head SET seq = :s, hash = :h", s=last - 1, h=previous)
    assert reg.svc.audit.verify_audit_chain(reg.viewer).ok
    result = verify(reg)
    assert not result.ok and "deleted" in result.problem and result.first_bad_seq == last


def test_the_anchor_advances_is_private_and_a_forged_one_is_refused(reg: Registry, tmp_path: Path) -> None:
    assert verify(reg).ok
    path = tmp_path / "data" / ANCHOR_FILE
    anchor = AuditAnchor(path, ServerKey(tmp_path / "data" / KEY_FILE))
    assert anchor.load() == (reg.audit_count(), reg.scalar("SELECT hash FROM audit_head"))
    assert path.stat().st_mode & 0o077 == 0
    reg.versions("anchored", 1)
    assert verify(reg).ok and anchor.load() is not None and anchor.load() == (reg.audit_count(), reg.scalar(
        "SELECT hash FROM audit_head"))
    seq, head_hash = anchor.load() or (0, "")
    path.write_text(f"{seq - 1}:{head_hash}:{'0' * 64}\n")  # a forged anchor (no key)
    result = verify(reg)
    assert not result.ok and "signed anchor" in result.problem
