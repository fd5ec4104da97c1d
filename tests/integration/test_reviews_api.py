"""Post-implementation reviews over HTTP: the admin who broke the glass cannot complete its review; an approver can.

Against the session's live server (``/api/v1``, ``calabi reviews`` in-process, the approvals desk and its
completion form, the model's Production history).
"""

from __future__ import annotations

import json
import secrets

from typer.testing import CliRunner

import calabi.cli.main as cli
from tests.fixtures.servers import LiveServer
from tests.integration.page_session import signed_in


def test_the_breaking_admin_cannot_complete_its_review_and_an_approver_can(live_server: LiveServer) -> None:
    suffix = secrets.token_hex(3)
    model = f"glass-{suffix}"
    approver_token = live_server.create_user(f"reviewer-{suffix}", "approver")
    viewer_token = live_server.create_user(f"watcher-{suffix}", "viewer")
    with live_server.client() as admin, live_server.client(viewer_token) as viewer:
        admin.post("/api/v1/models", json={"name": model}).raise_for_status()
        admin.post(f"/api/v1/models/{model}/versions", json={"source": str(live_server.artifact())}).raise_for_status()
        moved = admin.post(f"/api/v1/models/{model}/versions/1/stage",
                           json={"stage": "Production", "reason": "v0 scores are wrong since 02:00"})
        assert moved.status_code == 200, moved.text
        [review] = admin.get("/api/v1/reviews", params={"model": model, "status": "open"}).json()["reviews"]
        assert (review["status"], review["admin"], review["reason"], review["reviewer_role"]) == (
            "open", "admin", "v0 scores are wrong since 02:00", "approver")
        assert review["due_at"] - review["opened_at"] == 2 * 24 * 3600 * 1000  # the packaged policy: "2d"
        complete = f"/api/v1/reviews/{review['id']}/complete"

        own = admin.post(complete, json={"outcome": "accepted", "note": "looks fine to me"})
        assert own.status_code == 403, own.text
        assert own.json()["error_code"] == "PERMISSION_DENIED" and "broke the glass" in own.json()["message"]
        assert viewer.post(complete, json={"outcome": "accepted"}).status_code == 403
        unknown = viewer.post("/api/v1/reviews/999999/complete", json={"outcome": "accepted"})
        assert unknown.status_code in (403, 404)
        assert admin.get("/api/v1/reviews", params={"status": "late"}).json()["error_code"] == \
            "INVALID_PARAMETER_VALUE"
        browser = signed_in(live_server, approver_token)
        desk = browser.text("/ui/promotions")
        assert "Post-implementation reviews" in desk and f'id="review-{review["id"]}"' in desk
        assert f"/ui/reviews/{review['id']}/complete" in desk  # the approver may complete it from the desk

    runner = CliRunner()
    args = ["--url", live_server.url, "--token", approver_token, "reviews"]
    listed = runner.invoke(cli.app, [*args, "list", "--model", model, "--json"])
    assert listed.exit_code == 0, listed.output
    assert [r["id"] for r in json.loads(listed.stdout)] == [review["id"]]
    done = browser.post(f"/ui/reviews/{review['id']}/complete",
                        {"outcome": "accepted", "note": "the fix matches the incident"})
    assert done.status_code == 303 and done.headers["location"].startswith("/ui/promotions"), done.text
    again = runner.invoke(cli.app, [*args, "complete", str(review["id"]), "--outcome", "rollback_required"])
    assert again.exit_code != 0 and len(again.output.strip().splitlines()) == 1, again.output

    with live_server.client() as admin:
        [completed] = admin.get("/api/v1/reviews", params={"model": model, "status": "completed"}).json()["reviews"]
        assert (completed["completed_by"], completed["outcome"], completed["note"]) == (
            f"reviewer-{suffix}", "accepted", "the fix matches the incident")
        [stint] = admin.get(f"/api/v1/models/{model}/production-history").json()["stints"]
        assert stint["break_glass"] and stint["why"] == "v0 scores are wrong since 02:00"
        assert (stint["review_id"], stint["review"]["status"]) == (review["id"], "completed")
        events = admin.get("/api/v1/audit", params={"model": model}).json()
        [move] = [e for e in events if e["action"] == "transition_stage"]
        assert move["after"]["review"] == review["id"] and move["after"]["break_glass"]
        assert [e["after"]["outcome"] for e in events if e["action"] == "complete_review"] == ["accepted"]
    history = browser.text(f"/ui/models/{model}")
    assert f"review {review['id']}" in history and "status-completed" in history
