"""The ``[production.break_glass]`` policy section: the post-implementation review a break-glass move opens."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from policies.errors import PolicyError
from policies.loading import load_policy
from policies.models import BreakGlassRule


def _override(directory: Path, model: str, text: str) -> None:
    (directory / "models").mkdir(parents=True, exist_ok=True)
    (directory / "models" / f"{model}.toml").write_text(text, encoding="utf-8")


def test_the_packaged_default_reviews_within_two_days_with_reminders_every_twelve_hours(tmp_path: Path) -> None:
    rule = load_policy(tmp_path, "churn").policy.production.break_glass_review()

    assert rule == BreakGlassRule(review_within=timedelta(days=2), reminder_every=timedelta(hours=12),
                                  reviewer_role="approver")
    assert load_policy(tmp_path, "churn").policy.staging.break_glass_review() is None


def test_an_override_shortens_the_deadline_or_switches_the_review_off(tmp_path: Path) -> None:
    _override(tmp_path, "fraud", '[production.break_glass]\nreview_within = "1d"\nreviewer_role = "admin"\n')
    _override(tmp_path, "toy", "[production.break_glass]\nenabled = false\n")

    fraud = load_policy(tmp_path, "fraud").policy.production.break_glass_review()
    assert fraud is not None
    assert (fraud.review_within, fraud.reminder_every, fraud.reviewer_role) == (
        timedelta(days=1), timedelta(hours=12), "admin")
    assert load_policy(tmp_path, "toy").policy.production.break_glass_review() is None


@pytest.mark.parametrize(("text", "field"), [
    ('[production.break_glass]\nreview_within = "soon"\n', "production.break_glass.review_within"),
    ('[production.break_glass]\nreviewer_role = "viewer"\n', "production.break_glass.reviewer_role"),
    ('[production.break_glass]\nreminders = "1h"\n', "production.break_glass.reminders"),
    ("[staging.break_glass]\n", ""),
])
def test_a_bad_section_is_refused_at_load_naming_the_override(tmp_path: Path, text: str, field: str) -> None:
    _override(tmp_path, "churn", text)

    with pytest.raises(PolicyError) as refused:
        load_policy(tmp_path, "churn")

    assert str(tmp_path / "models" / "churn.toml") in str(refused.value)
    assert field in str(refused.value)
    if not field:
        assert "Production only" in str(refused.value)
