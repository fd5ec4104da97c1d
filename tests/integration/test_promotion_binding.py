"""The promotion's binding to its candidate, on SQLite and PostgreSQL: refusals while live, apply's re-check."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from policies.status import PromotionStatus
from registry_store.errors import InvalidStateError, PermissionDeniedError
from tests.integration.helpers import DATABASES, Registry, build_registry, database_url

POLICY = "a" * 64
TAG = "ci.tests_passed"


@pytest.fixture(params=DATABASES)
def reg(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Registry]:
    registry = build_registry(tmp_path, database_url(request, tmp_path))
    yield registry
    registry.services.close()


def test_a_live_promotion_pins_its_candidate_and_its_checked_evidence(reg: Registry) -> None:
    svc = reg.svc
    reg.versions("churn", 2)
    svc.versions.set_model_version_tag(reg.engineer, name="churn", version=2, key=TAG, value="true")
    promotion = svc.promotions.open_promotion(reg.engineer, model="churn", version=2, target_stage="Staging",
                                              justification="ready")
    svc.promotions.promotion_subject(reg.admin, promotion.id, tag_keys=[TAG], policy_hash=POLICY)

    for refuse in (lambda: svc.models.delete_registered_model(reg.admin, "churn"),
                   lambda: svc.models.rename_registered_model(reg.admin, name="churn", new_name="other"),
                   lambda: svc.versions.delete_model_version(reg.admin, name="churn", version=2)):
        with pytest.raises(InvalidStateError, match=promotion.id):
            refuse()
    svc.versions.delete_model_version(reg.engineer, name="churn", version=1)  # not the candidate
    with pytest.raises(PermissionDeniedError, match=TAG):
        svc.versions.set_model_version_tag(reg.engineer, name="churn", version=2, key=TAG, value="false")
    svc.versions.set_model_version_tag(reg.admin, name="churn", version=2, key=TAG, value="false")  # break-glass

    assert svc.promotions.evidence_changes(reg.viewer, promotion.id, policy_hash=POLICY) == ["tags"]
    with pytest.raises(InvalidStateError, match="tags"):
        svc.promotions.apply_promotion(reg.admin, promotion.id, expected_incumbent=None, description=None,
                                       approvers=[], validation_date="2026-12-06", policy_hash=POLICY)
    assert svc.versions.get_model_version(reg.viewer, name="churn", version=2).current_stage == "None"

    svc.promotions.record_promotion_state(reg.admin, promotion.id, status=PromotionStatus.CANCELLED)
    svc.models.rename_registered_model(reg.engineer, name="churn", new_name="churn-2")  # nothing live any more
