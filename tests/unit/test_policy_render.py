"""jinja2 rendering: the promoted description's sign-off line and the notification messages."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from policies.render import MAX_DESCRIPTION, NotificationContext, render_description, render_notification
from policies.results import CheckResult, Number

ON = date(2026, 4, 1)
PROMOTION = "promotion-churn-3-Production"


@pytest.mark.parametrize(
    ("existing", "kwargs", "expected"),
    [
        (
            "Churn model. Data 2024-01-01 to 2025-06-30. AUC 0.91.",
            {
                "approvers": ["alice", "bob"],
                "primary_metric": "auc",
                "candidate_value": 0.91,
                "incumbent_value": 0.87,
                "incumbent_version": 2,
            },
            "Churn model. Data 2024-01-01 to 2025-06-30. AUC 0.91.\n\n"
            "Validated by alice, bob on 2026-04-01 (promotion promotion-churn-3-Production); "
            "auc 0.91 vs 0.87 (Production v2).",
        ),
        (
            "",
            {"approvers": ["alice"], "primary_metric": "auc", "candidate_value": 0.912345678},
            "Validated by alice on 2026-04-01 (promotion promotion-churn-3-Production); "
            "auc 0.912346 (first Production version).",
        ),
        (
            "Old text.  \n\n",
            {"approvers": ["alice"]},
            "Old text.\n\nValidated by alice on 2026-04-01 (promotion promotion-churn-3-Production).",
        ),
        (
            "Rollback.",
            {"approvers": []},
            "Rollback.\n\nValidated by nobody (no sign-off required) on 2026-04-01 "
            "(promotion promotion-churn-3-Production).",
        ),
        (
            "<b>html</b> & stays",
            {"approvers": ["<script>"]},
            "<b>html</b> & stays\n\nValidated by <script> on 2026-04-01 (promotion promotion-churn-3-Production).",
        ),
    ],
)
def test_description_gets_the_sign_off_line(existing: str, kwargs: dict[str, Any], expected: str) -> None:
    assert render_description(existing, validated_on=ON, promotion_id=PROMOTION, **kwargs) == expected


def test_long_description_is_truncated_but_never_the_sign_off_line() -> None:
    line = (
        "Validated by alice on 2026-04-01 (promotion promotion-churn-3-Production); auc 0.91 vs 0.87 (Production v2)."
    )

    text = render_description(
        "x" * 6000,
        approvers=["alice"],
        validated_on=ON,
        promotion_id=PROMOTION,
        primary_metric="auc",
        candidate_value=0.91,
        incumbent_value=0.87,
        incumbent_version=2,
    )

    assert len(text) == MAX_DESCRIPTION
    assert text.endswith("…\n\n" + line)
    assert text.startswith("xxxx")


def test_description_exactly_at_the_limit_is_kept_whole() -> None:
    line = f"Validated by alice on 2026-04-01 (promotion {PROMOTION})."
    existing = "y" * (MAX_DESCRIPTION - len(line) - 2)

    text = render_description(existing, approvers=["alice"], validated_on=ON, promotion_id=PROMOTION)

    assert text == existing + "\n\n" + line
    assert len(text) == MAX_DESCRIPTION


def test_rendering_twice_does_not_repeat_the_sign_off_line() -> None:
    once = render_description("Model.", approvers=["alice"], validated_on=ON, promotion_id=PROMOTION)

    assert render_description(once, approvers=["alice"], validated_on=ON, promotion_id=PROMOTION) == once


def test_many_or_long_approver_names_keep_the_line_short() -> None:
    approvers = [f"user{i}-" + "n" * 300 for i in range(15)]

    text = render_description("", approvers=approvers, validated_on=ON, promotion_id=PROMOTION)

    assert text.startswith("Validated by user0-")
    assert ", 5 more on 2026-04-01" in text
    assert len(text) < 1500


RESULTS = [
    CheckResult(name="tests", passed=True),
    CheckResult(
        name="metrics",
        passed=False,
        reasons=["auc 0.85 does not beat Production v2 (0.87) (maximize; change -0.02)"],
        numbers=[Number(label="auc", candidate=0.85, production=0.87, threshold=0.0, delta=-0.02)],
    ),
]
CONTEXT: dict[str, Any] = {
    "model": "churn",
    "version": 3,
    "target_stage": "Production",
    "promotion_id": PROMOTION,
    "requester": "carol",
    "justification": "better auc",
    "approvals_needed": 2,
    "approved_by": ["alice"],
    "deadline": datetime(2026, 4, 8, 9, 30, tzinfo=UTC),
    "actor": "dave",
    "comment": "not this quarter",
    "results": RESULTS,
    "incumbent_version": 2,
}


@pytest.mark.parametrize(
    ("kind", "subject", "lines"),
    [
        (
            "requested",
            "promotion requested",
            [
                "carol requested promoting churn version 3 to Production.",
                "Justification: better auc",
                "The checklist is running. Once it passes, 2 sign-offs from users with the 'approver' role "
                "will be needed.",
            ],
        ),
        (
            "awaiting",
            "awaiting sign-off",
            [
                "All checks passed for churn version 3. It needs 1 more approval from users with the 'approver' role "
                "(not the requester).",
                "Approved so far: alice",
                "The request expires at 2026-04-08 09:30 UTC.",
                "✓ tests",
            ],
        ),
        (
            "reminder",
            "reminder: sign-off still needed",
            ["churn version 3 is still waiting for 1 approval from users with the 'approver' role."],
        ),
        ("promoted", "promoted", ["Approved by: alice", "The previous Production version 2 was archived."]),
        (
            "rejected",
            "rejected",
            ["The promotion of churn version 3 to Production was rejected by dave.", "Reason: not this quarter"],
        ),
        (
            "expired",
            "sign-off expired",
            [
                "The promotion of churn version 3 to Production expired at 2026-04-08 09:30 UTC with 1 of 2 approvals. "
                "Request a new promotion to try again."
            ],
        ),
        (
            "checks_failed",
            "checks failed",
            [
                "The promotion of churn version 3 to Production stopped: 1 check failed.",
                "✗ metrics",
                "    - auc 0.85 does not beat Production v2 (0.87) (maximize; change -0.02)",
                "    auc: candidate 0.85, Production 0.87, threshold 0, delta -0.02",
            ],
        ),
    ],
)
def test_notifications(kind: Any, subject: str, lines: list[str]) -> None:
    text = render_notification(kind, CONTEXT)
    rendered = text.splitlines()

    assert rendered[0] == f"[Calabi] churn v3 → Production: {subject}"
    for line in lines:
        assert line in rendered
    assert rendered[-2:] == [f"Promotion: {PROMOTION}", "Requested by: carol"]
    assert text.endswith("\n") and "\n\n\n" not in text


def test_a_check_error_is_not_worded_as_a_verdict() -> None:
    cause = "the test run could not complete: activity Heartbeat timeout"
    text = render_notification("check_error", {**CONTEXT, "comment": cause})

    assert text.splitlines()[0] == "[Calabi] churn v3 → Production: checks could not run"
    assert f"Cause: {cause}" in text and "so the model was not judged" in text
    assert "failed" not in text


def test_checks_failed_lists_only_the_failures() -> None:
    assert "tests" not in render_notification("checks_failed", CONTEXT)


def test_optional_parts_are_left_out() -> None:
    minimal = {k: CONTEXT[k] for k in ("model", "version", "target_stage", "promotion_id", "requester")}

    text = render_notification("rejected", NotificationContext(**minimal))

    assert "was rejected." in text
    assert "Reason" not in text


def test_plain_text_is_not_html_escaped() -> None:
    text = render_notification("rejected", {**CONTEXT, "comment": "<b>no</b> & never"})

    assert "Reason: <b>no</b> & never" in text


def test_missing_context_is_refused() -> None:
    with pytest.raises(ValidationError, match="requester"):
        render_notification(
            "promoted", {"model": "churn", "version": 3, "target_stage": "Production", "promotion_id": PROMOTION}
        )


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown notification kind 'paged'"):
        render_notification("paged", CONTEXT)  # type: ignore[arg-type]
