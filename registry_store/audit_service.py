"""AuditService: reading the audit log and verifying its hash chain."""

from __future__ import annotations

from sqlmodel import col, select

from registry_store.audit import Actor, append_event, event_view, verify_chain
from registry_store.audit_anchor import AuditAnchor, BadAnchorError
from registry_store.context import ServiceBase
from registry_store.entities import AuditEvent, AuditVerification
from registry_store.errors import InvalidParameterError
from registry_store.model_access import visible_model_name
from registry_store.tables import AuditEventRow
from registry_store.users import require_role

__all__ = ["AuditService"]


class AuditService(ServiceBase):
    """List audit events, verify the chain and record writes to the tracking server.

    Registry mutations append their events through the context, inside their own transaction.
    """

    def list_audit_events(
        self,
        actor: Actor,
        *,
        model_name: str | None = None,
        after_seq: int = 0,
        limit: int = 100,
        newest_first: bool = False,
    ) -> list[AuditEvent]:
        """Audit events after ``after_seq`` in sequence order (or newest first), optionally for one model;
        never those of a model ``actor`` may not see."""
        require_role(actor, "viewer", "read the audit log")
        if not 1 <= limit <= 10_000:
            raise InvalidParameterError("Parameter 'limit' must be between 1 and 10000.")
        with self._db.read() as session:
            query = select(AuditEventRow).where(col(AuditEventRow.seq) > after_seq,
                                                visible_model_name(actor, AuditEventRow.model_name))
            if model_name:
                query = query.where(col(AuditEventRow.model_name) == model_name)
            order = col(AuditEventRow.seq).desc() if newest_first else col(AuditEventRow.seq)
            rows = session.exec(query.order_by(order).limit(limit)).all()
            return [event_view(r) for r in rows]

    def verify_audit_chain(self, actor: Actor, anchor: AuditAnchor | None = None) -> AuditVerification:
        """Recompute the audit hash chain; any edited, removed or reordered event is reported.

        With ``anchor``, the chain must also still hold the last verified head (a re-hashed or truncated
        chain is caught), and a chain that verifies becomes the new anchor.
        """
        require_role(actor, "viewer", "read the audit log")
        with self._db.read() as session:
            result = verify_chain(session)
            if anchor is None or not result.ok:
                return result
            try:
                anchored = anchor.load()
            except BadAnchorError as exc:
                return AuditVerification(ok=False, events_checked=result.events_checked, problem=str(exc))
            if anchored is not None:
                seq, head_hash = anchored
                row = session.exec(select(AuditEventRow).where(col(AuditEventRow.seq) == seq)).first()
                if row is None or row.hash != head_hash:
                    return AuditVerification(
                        ok=False, events_checked=result.events_checked, first_bad_seq=seq,
                        problem=f"the chain no longer holds the anchored event {seq} as verified before "
                                f"({'events deleted' if row is None else 're-hashed'})",
                    )
            last = session.exec(  # the last event verified (seqs are gap-free from 1)
                select(AuditEventRow).where(col(AuditEventRow.seq) == result.events_checked)
            ).first()
        if last is not None:
            anchor.advance(last.seq, last.hash)
        return result

    def record_tracking_write(
        self, actor: Actor, route: str, *, run_id: str = "", experiment_id: str = "", model_id: str = ""
    ) -> None:
        """Append a ``tracking_write`` event: ``actor`` wrote to the tracking server through ``route``.

        The subject is the run (else the logged model, else the experiment) the write touched.
        """
        require_role(actor, "engineer", "write to the MLflow tracking server")
        subject = (f"run:{run_id}" if run_id else f"logged_model:{model_id}" if model_id
                   else f"experiment:{experiment_id}" if experiment_id else route)
        after = {"route": route, "run_id": run_id, "experiment_id": experiment_id, "model_id": model_id}
        with self._db.write_connection() as connection:
            append_event(connection, actor=actor, action="tracking_write", timestamp=self._clock(), subject=subject,
                         after=after)
