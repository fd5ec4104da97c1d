"""The append-only, hash-chained audit log.

Each event stores the hash of the event before it. Appending locks the single
``audit_head`` row, so concurrent transactions append in a total order and the chain
never forks; the event is written in the caller's transaction, with the mutation.
Appending runs prebuilt Core statements: lock and read the head, then insert the event and
advance the head (on PostgreSQL both in one statement, one round trip).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, bindparam, insert, update
from sqlmodel import Session, col, select

from registry_store.entities import AuditEvent, AuditVerification
from registry_store.tables import AuditEventRow, AuditHeadRow

__all__ = ["HASH_RULE", "Actor", "append_event", "event_view", "verify_chain"]

GENESIS_HASH = "0" * 64

_CHAINED = (
    "seq", "timestamp", "actor", "action", "model_name", "version", "subject", "before", "after", "request_id",
    "prev_hash",
)
"""The fields an event's hash covers, in hashing order."""

HASH_RULE = (
    f"hash = sha256 hex of the JSON array [{', '.join(_CHAINED)}] encoded compactly (separators ',' and ':', "
    "object keys sorted, non-ASCII escaped), where before and after are first encoded the same way into strings; "
    "prev_hash is the hash of the event before (64 zeros for the first)"
)
"""How an event's hash is computed, for someone checking the chain outside Calabi (``_chain_hash``)."""

_LOCK_HEAD = select(col(AuditHeadRow.seq), col(AuditHeadRow.hash)).where(col(AuditHeadRow.id) == 1).with_for_update()
_INSERT_EVENT = insert(AuditEventRow)
_ADVANCE_HEAD = (
    update(AuditHeadRow)
    .where(col(AuditHeadRow.id) == 1)
    .values(seq=bindparam("head_seq"), hash=bindparam("head_hash"))
)
_APPEND_POSTGRES = _ADVANCE_HEAD.add_cte(
    insert(AuditEventRow).values({name: bindparam(f"event_{name}") for name in (*_CHAINED, "hash")}).cte("appended")
)
"""PostgreSQL: insert the event and advance the head in one statement (a data-modifying CTE always runs)."""


@dataclass(frozen=True)
class Actor:
    """The authenticated user on whose behalf a call runs."""

    name: str
    roles: frozenset[str]
    groups: frozenset[str] = frozenset()
    request_id: str = ""


def _dump(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def _chain_hash(fields: list[Any]) -> str:
    return hashlib.sha256(_dump(fields).encode()).hexdigest()


def _event_hash(row: AuditEventRow) -> str:
    return _chain_hash([getattr(row, name) for name in _CHAINED])


def append_event(
    transaction: Session | Connection,
    *,
    actor: Actor,
    action: str,
    timestamp: int,
    model_name: str = "",
    version: int | None = None,
    subject: str,
    before: Any = None,
    after: Any = None,
) -> None:
    """Append one event in the transaction of ``transaction`` (locks the chain head).

    Changes pending in a session are flushed first, so they are written before the head is locked.
    """
    if isinstance(transaction, Session):
        transaction.flush()
        connection = transaction.connection()
    else:
        connection = transaction
    head_seq, head_hash = connection.execute(_LOCK_HEAD).one()
    event: dict[str, Any] = {
        "seq": head_seq + 1,
        "timestamp": timestamp,
        "actor": actor.name,
        "action": action,
        "model_name": model_name,
        "version": version,
        "subject": subject,
        "before": _dump(before),
        "after": _dump(after),
        "request_id": actor.request_id,
        "prev_hash": head_hash,
    }
    event["hash"] = _chain_hash([event[name] for name in _CHAINED])
    head = {"head_seq": event["seq"], "head_hash": event["hash"]}
    if connection.dialect.name == "postgresql":
        connection.execute(_APPEND_POSTGRES, {**head, **{f"event_{name}": value for name, value in event.items()}})
    else:
        connection.execute(_INSERT_EVENT, event)
        connection.execute(_ADVANCE_HEAD, head)


def event_view(row: AuditEventRow) -> AuditEvent:
    """The public view of an audit row."""
    return AuditEvent(
        seq=row.seq,
        timestamp=row.timestamp,
        actor=row.actor,
        action=row.action,
        model_name=row.model_name,
        version=row.version,
        subject=row.subject,
        before=json.loads(row.before),
        after=json.loads(row.after),
        request_id=row.request_id,
        prev_hash=row.prev_hash,
        hash=row.hash,
    )


def verify_chain(session: Session, *, batch: int = 5000) -> AuditVerification:
    """Recompute every hash and link; report the first event that does not match."""
    expected_prev, expected_seq, checked = GENESIS_HASH, 1, 0
    last_seq = 0
    head = session.get(AuditHeadRow, 1)  # read first: events appended while we verify are simply newer
    end = head.seq if head is not None else 0
    while True:
        rows = session.exec(
            select(AuditEventRow)
            .where(col(AuditEventRow.seq) > last_seq, col(AuditEventRow.seq) <= end)
            .order_by(col(AuditEventRow.seq))
            .limit(batch)
        ).all()
        if not rows:
            break
        for row in rows:
            problem = ""
            if row.seq != expected_seq:
                problem = f"sequence gap: expected {expected_seq}, found {row.seq}"
            elif row.prev_hash != expected_prev:
                problem = "link to the previous event is broken"
            elif _event_hash(row) != row.hash:
                problem = "event content does not match its hash (edited)"
            if problem:
                return AuditVerification(ok=False, events_checked=checked, first_bad_seq=row.seq, problem=problem)
            expected_prev, expected_seq, last_seq = row.hash, row.seq + 1, row.seq
            checked += 1
    if head is not None and (head.seq != last_seq or head.hash != expected_prev):
        return AuditVerification(
            ok=False, events_checked=checked, first_bad_seq=last_seq + 1,
            problem="chain head does not match the last event (events deleted)",
        )
    return AuditVerification(ok=True, events_checked=checked)
