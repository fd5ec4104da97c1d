"""EvidencePacks: everything about one promotion a model validator hands an examiner, read in one snapshot.

The pack holds the candidate's identity, the policy files in force with their hash (and whether it is still
the one the promotion recorded), the read model (checks with their numbers, evidence hash, requester, sign-offs,
status history), the notifications sent, and the promotion's audit events with the chain links from the first
of them to the head, so an examiner can recompute each event's hash and follow the chain to the head at export.
"""

from __future__ import annotations

import json
from pathlib import Path

from sqlmodel import Session, col, select

from policies.errors import PolicyError
from policies.loading import PACKAGED_DEFAULT, default_policy_text, load_policy
from registry_store.audit import HASH_RULE, Actor, event_view
from registry_store.audit_anchor import AuditAnchor, BadAnchorError
from registry_store.context import ServiceBase
from registry_store.entities import (
    AuditTrail,
    CandidateIdentity,
    ChainAnchor,
    ChainLink,
    EvidencePack,
    PolicyFile,
    PolicyInForce,
)
from registry_store.notification_outbox import notification_view
from registry_store.promotion_rows import promotion_row, promotion_view
from registry_store.tables import AuditEventRow, AuditHeadRow, ModelVersionRow, NotificationRow, PromotionRow
from registry_store.users import require_role

__all__ = ["PACK_FORMAT", "EvidencePacks"]

PACK_FORMAT = "calabi-evidence-pack/1"


class EvidencePacks(ServiceBase):
    """Assemble a promotion's evidence pack."""

    def evidence_pack(
        self, actor: Actor, promotion_id: object, *, policy_dir: Path, anchor: AuditAnchor | None = None
    ) -> EvidencePack:
        """The evidence pack of one promotion, its database parts read in one snapshot.

        ``policy_dir`` is the directory the promotion's policy is loaded from; ``anchor``, when given, is the
        audit chain's signed anchor, reported with whether the chain still holds it.
        """
        require_role(actor, "viewer", "read promotions")
        with self._db.snapshot() as session:
            row = promotion_row(session, promotion_id, reader=actor)
            notifications = session.exec(
                select(NotificationRow).where(col(NotificationRow.promotion_id) == row.id)
                .order_by(col(NotificationRow.id))
            ).all()
            pack = EvidencePack(
                format=PACK_FORMAT, exported_at=self._clock(), exported_by=actor.name, promotion=promotion_view(row),
                candidate=_candidate(session, row), policy=_policy_in_force(policy_dir, row),
                notifications=[notification_view(n) for n in notifications], audit=_audit_trail(session, row, anchor),
            )
        return pack


def _candidate(session: Session, promotion: PromotionRow) -> CandidateIdentity:
    version = session.get(ModelVersionRow, promotion.candidate_id) if promotion.candidate_id is not None else None
    if version is not None and version.version != promotion.version:  # the row was deleted and its id reused
        version = None
    return CandidateIdentity(
        model_name=promotion.model_name, version=promotion.version, digest=promotion.candidate_digest,
        current_digest=version.digest if version else "", source=version.source if version else "",
        run_id=version.run_id if version else "", storage_location=version.storage_location if version else "",
    )


def _policy_in_force(policy_dir: Path, promotion: PromotionRow) -> PolicyInForce:
    """The files ``load_policy`` reads for the model now (for the risk tier the snapshot used); ``changed``: their
    hash is not the one recorded."""
    recorded = promotion.policy_hash
    try:
        loaded = load_policy(policy_dir, promotion.model_name, tier=promotion.risk_tier)
        files = [PolicyFile(source=source, text=default_policy_text() if source == PACKAGED_DEFAULT
                            else Path(source).read_text(encoding="utf-8")) for source in loaded.sources]
    except (PolicyError, OSError, UnicodeDecodeError) as exc:
        return PolicyInForce(files=[], recorded_hash=recorded, current_hash="", changed=bool(recorded),
                             problem=f"the policy in force cannot be loaded: {exc}")
    return PolicyInForce(files=files, recorded_hash=recorded, current_hash=loaded.content_hash,
                         changed=bool(recorded) and loaded.content_hash != recorded)


def _audit_trail(session: Session, promotion: PromotionRow, anchor: AuditAnchor | None) -> AuditTrail:
    """The events naming the promotion, the candidate's other events between them, and the links to the head."""
    naming = [
        event for event in session.exec(
            select(AuditEventRow).where(col(AuditEventRow.model_name) == promotion.model_name,
                                        col(AuditEventRow.after).like(f'%"promotion":"{promotion.id}"%'))
        ).all()
        if json.loads(event.after).get("promotion") == promotion.id
    ]
    head = session.get(AuditHeadRow, 1)
    head_seq, head_hash = (head.seq, head.hash) if head is not None else (0, "")
    if not naming:
        return AuditTrail(hash_rule=HASH_RULE, events=[], links=[], head_seq=head_seq, head_hash=head_hash,
                          anchor=_anchor_state(session, anchor))
    first, last = min(e.seq for e in naming), max(e.seq for e in naming)
    during = session.exec(
        select(AuditEventRow).where(col(AuditEventRow.model_name) == promotion.model_name,
                                    col(AuditEventRow.version) == promotion.version,
                                    col(AuditEventRow.seq) >= first, col(AuditEventRow.seq) <= last)
    ).all()
    events = sorted({e.seq: e for e in (*naming, *during)}.values(), key=lambda e: e.seq)
    links = session.exec(
        select(AuditEventRow.seq, AuditEventRow.prev_hash, AuditEventRow.hash)
        .where(col(AuditEventRow.seq) >= first, col(AuditEventRow.seq) <= head_seq)
        .order_by(col(AuditEventRow.seq))
    ).all()
    return AuditTrail(
        hash_rule=HASH_RULE, events=[event_view(e) for e in events],
        links=[ChainLink(seq=seq, prev_hash=prev, hash=value) for seq, prev, value in links],
        head_seq=head_seq, head_hash=head_hash, anchor=_anchor_state(session, anchor),
    )


def _anchor_state(session: Session, anchor: AuditAnchor | None) -> ChainAnchor | None:
    """The signed anchor and whether the chain still holds it (None: no anchor yet)."""
    if anchor is None:
        return None
    try:
        anchored = anchor.load()
    except BadAnchorError as exc:
        return ChainAnchor(problem=str(exc))
    if anchored is None:
        return None
    seq, anchored_hash = anchored
    held = session.exec(select(AuditEventRow.hash).where(col(AuditEventRow.seq) == seq)).first() == anchored_hash
    return ChainAnchor(seq=seq, hash=anchored_hash, held=held,
                       problem="" if held else f"the chain no longer holds the anchored event {seq} as verified")
