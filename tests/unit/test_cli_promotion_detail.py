"""``calabi promotions show`` renders the read model alone, and says a check error is not a verdict."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from calabi.cli.promotion_tables import promotion_detail, read_history

ROW: dict[str, Any] = {
    "id": "p1", "workflow_id": "promotion-churn-2-Production", "model_name": "churn", "version": 2,
    "target_stage": "Production", "kind": "promotion", "requester": "carol", "justification": "better auc",
    "status": "check_error", "live": True, "incumbent_version": 1, "checklist": None, "approvals": [],
    "required_approvals": 1, "approver_role": "approver", "deadline": None, "reminders_sent": 0,
    "message": "the test run could not complete: activity Heartbeat timeout", "policy_hash": "abc",
    "creation_timestamp": 0, "last_updated_timestamp": 0,
    "history": [{"at": "2026-12-06T18:00:00Z", "status": "running_checks", "note": "checks started"},
                {"at": "2026-12-06T18:01:00Z", "status": "check_error", "note": "heartbeat timeout"},
                {"at": "garbage"}],
}


def test_a_check_error_is_shown_as_no_verdict_with_the_rows_history() -> None:
    history = read_history(ROW["history"])
    console = Console(width=200, record=True)
    console.print(promotion_detail(ROW, history))
    text = console.export_text()

    assert [change.status for change in history] == ["running_checks", "check_error"]
    assert "a check could not be evaluated; the model was not judged" in text
    assert "the test run could not complete: activity Heartbeat timeout" in text
    assert "checks started" in text and "(finished)" not in text
