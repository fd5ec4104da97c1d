"""Pure helpers of the pages: the search box, Accept negotiation, the history views, the Stage dialog's plan."""

from __future__ import annotations

from typing import Any

import pytest

from calabi.api.pages.auth import prefers_html
from calabi.api.pages.models import name_filter
from calabi.api.pages.present import display_actor, signature_columns, timeline
from calabi.api.pages.web import safe_next
from registry_store.entities import AuditEvent, ModelVersion
from registry_store.production_history import production_stints


def event(seq: int, action: str, version: int | None, *, actor: str = "alice", before: Any = None,
          after: Any = None) -> AuditEvent:
    return AuditEvent(seq=seq, timestamp=1_000 * seq, actor=actor, action=action, model_name="churn", version=version,
                      subject=f"churn/{version}", before=before, after=after, request_id="", prev_hash="", hash="")


def version(number: int, stage: str) -> ModelVersion:
    return ModelVersion(
        name="churn", version=number, current_stage=stage, description="", source="s", run_id="", run_link="",
        storage_location="x", digest="d", signature="", evidence={}, status="READY", status_message="", user_id="u",
        creation_timestamp=0, last_updated_timestamp=0, tags={}, aliases=[],
    )


@pytest.mark.parametrize(("query", "expected"), [
    ("", None),
    ("  churn ", "name ILIKE '%churn%'"),
    ("50%_o'k", "name ILIKE '%50\\%\\_o''k%'"),
    ("name LIKE 'churn%'", "name LIKE 'churn%'"),
    ("tags.owner = 'alice'", "tags.owner = 'alice'"),
    ("name in ('a', 'b')", "name in ('a', 'b')"),
])
def test_the_search_box(query: str, expected: str | None) -> None:
    assert name_filter(query) == expected


def test_browsers_prefer_html_and_api_clients_do_not() -> None:
    assert prefers_html("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8")
    assert not prefers_html("application/json")
    assert not prefers_html("*/*")
    assert not prefers_html("")
    assert not prefers_html("application/json, text/html;q=0.5")


def test_only_local_pages_are_followed_after_sign_in() -> None:
    assert safe_next("/ui/models/churn?x=1") == "/ui/models/churn?x=1"
    for bad in (None, "", "https://evil.example/", "//evil.example/ui/", "/api/v1/models", "/ui/sign-in",
                "/ui/\\evil"):
        assert safe_next(bad) == "/ui/models"


def test_production_history_says_which_version_was_production_when_and_why() -> None:
    events = [
        event(1, "transition_stage", 1, actor="admin", before={"stage": "None"},
              after={"stage": "Production", "archived": [], "break_glass": True}),
        event(2, "request_promotion", 2, after={"promotion": "p1", "target": "Production", "kind": "promotion",
                                                 "justification": "auc up"}),
        event(3, "sign_off_promotion", 2, actor="bob", after={"promotion": "p1", "comment": "lgtm"}),
        event(4, "transition_stage", 2, actor="workflow:promotion-churn-2-Production", before={"stage": "Staging"},
              after={"stage": "Production", "archived": [1], "break_glass": False, "promotion": "p1",
                     "approved_by": ["bob"]}),
        event(5, "transition_stage", 2, actor="admin", before={"stage": "Production"},
              after={"stage": "Archived", "archived": [], "break_glass": True}),
    ]
    newest, oldest = production_stints(list(reversed(events)))
    assert (newest.version, newest.since, newest.until, newest.ended_by) == (2, 4000, 5000, "admin")
    assert (newest.moved_by, newest.why, newest.approved_by, newest.promotion) == ("alice", "auc up", ["bob"], "p1")
    assert (oldest.version, oldest.until, oldest.break_glass, oldest.moved_by) == (1, 4000, True, "admin")

    entries = timeline(events)
    assert [e.at for e in entries] == [5000, 4000, 3000, 2000, 1000]
    assert entries[1].text == "moved version 2 from Staging to Production, archiving v1"
    assert entries[1].why == "Requested by alice: auc up · approved by bob"
    assert entries[0].text.endswith("break-glass (admin, no promotion)")
    assert display_actor(events[3].actor) == "promotion workflow" and display_actor("bob") == "bob"


def test_signature_columns() -> None:
    signature = '{"inputs": "[{\\"name\\": \\"tenure\\", \\"type\\": \\"double\\", \\"required\\": false}]", ' \
                '"outputs": "[{\\"type\\": \\"long\\"}]"}'
    columns = signature_columns(signature)
    assert [(c.name, c.type, c.required) for c in columns["inputs"]] == [("tenure", "double", False)]
    assert [c.type for c in columns["outputs"]] == ["long"]
    assert signature_columns("") == {"inputs": [], "outputs": []}
    assert signature_columns("not json") == {"inputs": [], "outputs": []}
