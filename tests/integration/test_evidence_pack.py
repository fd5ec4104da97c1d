"""A promotion's evidence pack from the registry, on SQLite and PostgreSQL: what it holds and what it flags.

The live-server path (API, CLI export, printable page) is driven in ``test_cli_promotions.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from policies.loading import PACKAGED_DEFAULT, default_policy_text, load_policy
from policies.status import PromotionStatus
from registry_store.errors import NotFoundError
from tests.integration.audit_trail import verify_audit_trail
from tests.integration.helpers import DATABASES, Registry, build_registry, database_url

OVERRIDE = "[production.sign_off]\napprovers = 2\n"


@pytest.fixture(params=DATABASES)
def reg(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Registry]:
    registry = build_registry(tmp_path, database_url(request, tmp_path))
    yield registry
    registry.services.close()


def test_the_pack_holds_the_promotion_and_its_audit_chain_and_flags_a_changed_policy(
    reg: Registry, tmp_path: Path
) -> None:
    svc = reg.svc
    policy_dir = tmp_path / "policy"
    (policy_dir / "models").mkdir(parents=True)
    override = policy_dir / "models" / "churn.toml"
    override.write_text(OVERRIDE)
    recorded = load_policy(policy_dir, "churn").content_hash
    reg.versions("churn", 1)
    promotion = svc.promotions.open_promotion(reg.engineer, model="churn", version=1, target_stage="Staging",
                                              justification="ready")
    svc.promotions.promotion_subject(reg.admin, promotion.id, tag_keys=[], policy_hash=recorded)
    svc.promotions.record_promotion_state(reg.admin, promotion.id, status=PromotionStatus.AWAITING_SIGN_OFF,
                                          policy_hash=recorded)
    reg.versions("other", 1)  # another model's events fall between the promotion's: links only
    svc.versions.set_model_version_tag(reg.engineer, name="churn", version=1, key="note", value="reviewed")
    svc.promotions.record_sign_off(reg.approver, promotion.id, comment="fine",
                                   approvals=[{"user": reg.approver.name, "at": "2026-12-06T20:00:00Z"}])
    svc.promotions.record_promotion_state(reg.admin, promotion.id, status=PromotionStatus.CANCELLED)
    svc.notifications.append_notification(kind="requested", promotion_id=promotion.id, model_name="churn",
                                          recipients=["leads@example.com"], body="please review", state={})
    reg.versions("other", 1)  # after the promotion's last event: the links reach the head
    svc.audit.verify_audit_chain(reg.viewer, reg.services.audit_anchor)

    pack = svc.evidence_packs.evidence_pack(reg.viewer, promotion.id, policy_dir=policy_dir,
                                            anchor=reg.services.audit_anchor)

    assert pack.exported_by == reg.viewer.name and pack.promotion.id == promotion.id
    version = svc.versions.get_model_version(reg.viewer, name="churn", version=1)
    assert pack.candidate.digest == pack.candidate.current_digest == version.digest
    assert [(f.source, f.text) for f in pack.policy.files] == [(PACKAGED_DEFAULT, default_policy_text()),
                                                                (str(override), OVERRIDE)]
    assert pack.policy.recorded_hash == pack.policy.current_hash == recorded and not pack.policy.changed
    assert [n.body for n in pack.notifications] == ["please review"]
    actions = [e.action for e in pack.audit.events]
    assert actions == ["request_promotion", "bind_promotion_evidence", "promotion_state", "set_model_version_tag",
                       "sign_off_promotion", "promotion_state"], actions
    assert {e.model_name for e in pack.audit.events} == {"churn"}
    assert pack.audit.links[-1].seq == pack.audit.head_seq > pack.audit.events[-1].seq
    verify_audit_trail(pack.audit.model_dump(mode="json"))
    assert pack.audit.anchor is not None and pack.audit.anchor.held

    override.write_text(OVERRIDE.replace("2", "3"))
    changed = svc.evidence_packs.evidence_pack(reg.viewer, promotion.id, policy_dir=policy_dir)
    assert changed.policy.changed and changed.policy.current_hash not in ("", recorded)
    assert changed.audit.anchor is None
    override.write_text("[production.sign_off\n")
    broken = svc.evidence_packs.evidence_pack(reg.viewer, promotion.id, policy_dir=policy_dir).policy
    assert broken.changed and broken.files == [] and "invalid TOML" in broken.problem

    with pytest.raises(NotFoundError):
        svc.evidence_packs.evidence_pack(reg.viewer, "0123456789abcdef", policy_dir=policy_dir)
