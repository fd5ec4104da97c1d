"""The decision rules of ``policies.decisions`` seen through every door: the HTTP API, the web page,
``PromotionService`` and the workflow itself (an update sent straight to its handle).

The real FastAPI app runs in-process over the harness's services (real SQLite registry, the
real worker and activities on the time-skipping server); nothing of ours is replaced.
"""

from __future__ import annotations

import dataclasses
import html
import re
import secrets
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import text
from temporalio.client import WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError

from calabi.api.app import create_app
from policies.status import PromotionStatus
from registry_store.audit import Actor
from registry_store.entities import Promotion
from registry_store.errors import InvalidParameterError, PermissionDeniedError
from tests.workflows.conftest import Harness
from workflows.models import Decision, StopReason
from workflows.promotion import PromotionWorkflow

S = PromotionStatus
REQUESTER_MAY_SIGN = "[production.sign_off]\nexclude_requester = false\n"
QUORUM_OF_TWO = "[production.sign_off]\napprovers = 2\n"
HTML = {"accept": "text/html"}


@dataclasses.dataclass(frozen=True)
class User:
    actor: Actor
    token: str

    @property
    def name(self) -> str:
        return self.actor.name

    @property
    def auth(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token}"}


def user(h: Harness, name: str, *roles: str) -> User:
    """A user with a token (the harness's users have none)."""
    _, token = h.services.users.create_user(h.admin, name=name, roles=list(roles))
    return User(h.services.users.authenticate(token), token)


def look_alike(h: Harness, name: str, *roles: str) -> User:
    """A user row named like another after NFKC and case folding: creation refuses such names now, so the
    row is renamed with SQL (as rows created before that rule would read); the decision rule must still hold."""
    placeholder = f"placeholder-{secrets.token_hex(4)}"
    created = user(h, placeholder, *roles)
    with h.services.db.engine.begin() as connection:
        connection.execute(text("UPDATE users SET name = :name WHERE name = :placeholder"),
                           {"name": name, "placeholder": placeholder})
    return User(h.services.users.authenticate(created.token), created.token)


def fullwidth(text: str) -> str:
    """``text`` in Unicode's fullwidth compatibility forms (NFKC maps them back)."""
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


@pytest_asyncio.fixture
async def api(harness: Harness) -> AsyncIterator[httpx.AsyncClient]:
    """The real app over the harness's services and its PromotionService (the worker's task queue)."""
    app = create_app(dataclasses.replace(harness.services, promotions=harness.promotions))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as client:
        yield client


async def awaiting_sign_off(h: Harness, requester: User, *, override: str | None = None) -> Promotion:
    """A promotion of a fresh model requested by ``requester``, waiting for sign-off."""
    model = f"churn-{secrets.token_hex(4)}"
    if override is not None:
        h.override(model, override)
    h.register(model)
    promotion = await h.request(requester.actor, model=model)
    await h.wait_for(promotion, S.AWAITING_SIGN_OFF)
    return promotion


async def workflow_refusal(h: Harness, promotion: Promotion, update: Any, decision: Decision) -> ApplicationError:
    """Send ``update`` straight to the workflow (no registry check first); the validator's refusal."""
    with pytest.raises(WorkflowUpdateFailedError) as info:
        await h.handle(promotion).execute_update(update, decision)
    cause = info.value.cause
    assert isinstance(cause, ApplicationError)
    return cause


def error(response: httpx.Response, status: int, code: str) -> str:
    """An MLflow-shaped error of ``status`` and ``code``; its message."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error_code"] == code, body
    return str(body["message"])


async def awaiting_me(api: httpx.AsyncClient, who: User) -> list[str]:
    """The ids ``GET /api/v1/promotions?awaiting=me`` lists for ``who``."""
    response = await api.get("/api/v1/promotions", params={"awaiting": "me"}, headers=who.auth)
    assert response.status_code == 200, response.text
    return [p["id"] for p in response.json()["promotions"]]


async def signed_in(api: httpx.AsyncClient, who: User) -> str:
    """Sign ``api`` in on the web pages as ``who``; the page's CSRF token."""
    form = (await api.get("/ui/sign-in")).text
    nonce = re.search(r'name="sign_in_token" value="([^"]+)"', form)
    assert nonce, form
    response = await api.post("/ui/sign-in", data={"sign_in_token": nonce.group(1), "token": who.token,
                                                   "next": "/ui/models"})
    assert response.status_code == 303, response.text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', (await api.get("/ui/models")).text)
    assert csrf
    return csrf.group(1)


# ------------------------------------------------------------------------------ exclude_requester


async def test_the_requester_signs_off_when_the_policy_does_not_exclude_them(
    harness: Harness, api: httpx.AsyncClient
) -> None:
    h = harness
    lead = user(h, f"lead-{secrets.token_hex(3)}", "engineer", "approver")
    promotion = await awaiting_sign_off(h, lead, override=REQUESTER_MAY_SIGN)
    waiting = await h.state(promotion)
    assert waiting.sign_off is not None and waiting.sign_off.exclude_requester is False
    [notice] = [n for n in h.notifications(promotion) if n.kind == "awaiting"]
    assert "(not the requester)" not in notice.body
    assert promotion.id in await awaiting_me(api, lead)  # the read model mirrors the snapshot's rule

    response = await api.post(f"/api/v1/promotions/{promotion.id}/sign-off", json={"comment": "my own model"},
                              headers=lead.auth)

    assert response.status_code == 200, response.text
    assert [a["user"] for a in response.json()["approvals"]] == [lead.name]
    assert (await h.outcome(promotion)).status == S.PROMOTED
    assert h.version(promotion.model_name, 2).tags["validated_by"] == lead.name


async def test_the_workflow_alone_lets_the_requester_sign_off_when_the_policy_allows(harness: Harness) -> None:
    h = harness
    lead = user(h, f"lead-{secrets.token_hex(3)}", "engineer", "approver")
    promotion = await awaiting_sign_off(h, lead, override=REQUESTER_MAY_SIGN)

    state = await h.handle(promotion).execute_update(
        PromotionWorkflow.sign_off, Decision(user=fullwidth(lead.name.upper()), roles=["approver"]))

    assert [a.user for a in state.approvals] == [fullwidth(lead.name.upper())]
    assert (await h.outcome(promotion)).status == S.PROMOTED


async def test_the_requester_is_refused_under_any_spelling_when_the_policy_excludes_them(
    harness: Harness, api: httpx.AsyncClient
) -> None:
    h = harness
    tag = secrets.token_hex(3)
    requester = user(h, f"alice-{tag}", "engineer", "approver")
    # Other user rows whose names are the requester's after NFKC and case folding.
    shouted = look_alike(h, f"ALICE-{tag.upper()}", "approver")
    wide = look_alike(h, fullwidth(f"Alice-{tag}"), "approver")
    promotion = await awaiting_sign_off(h, requester)
    assert (await h.state(promotion)).sign_off.exclude_requester is True  # type: ignore[union-attr]

    assert promotion.id in await awaiting_me(api, user(h, f"bob-{tag}", "approver"))
    for who in (requester, shouted, wide):
        assert promotion.id not in await awaiting_me(api, who)
        response = await api.post(f"/api/v1/promotions/{promotion.id}/sign-off", json={}, headers=who.auth)
        assert "separation of duties" in error(response, 403, "PERMISSION_DENIED")
        refusal = await workflow_refusal(h, promotion, PromotionWorkflow.sign_off,
                                         Decision(user=f" {who.name} ", roles=["approver"]))
        assert (refusal.type, "separation of duties" in refusal.message) == ("PERMISSION_DENIED", True)

    state = await h.state(promotion)
    assert state.status == S.AWAITING_SIGN_OFF and state.approvals == []
    await h.decide(h.approver, promotion, "sign_off")
    assert (await h.outcome(promotion)).status == S.PROMOTED


async def test_one_person_under_two_spellings_is_one_approval(harness: Harness, api: httpx.AsyncClient) -> None:
    h = harness
    tag = secrets.token_hex(3)
    bob, wide_bob = user(h, f"bob-{tag}", "approver"), look_alike(h, fullwidth(f"BOB-{tag}"), "approver")
    promotion = await awaiting_sign_off(h, user(h, f"carol-{tag}", "engineer"), override=QUORUM_OF_TWO)
    await h.decide(bob.actor, promotion, "sign_off", "first")

    response = await api.post(f"/api/v1/promotions/{promotion.id}/sign-off", json={}, headers=wide_bob.auth)

    assert "has already signed off" in error(response, 409, "RESOURCE_CONFLICT")
    refusal = await workflow_refusal(h, promotion, PromotionWorkflow.sign_off,
                                     Decision(user=wide_bob.name, roles=["approver"]))
    assert refusal.type == "RESOURCE_CONFLICT"
    assert [a.user for a in (await h.state(promotion)).approvals] == [bob.name]


async def test_the_registry_applies_the_snapshot_rule_before_anything_is_sent(harness: Harness) -> None:
    h = harness
    lead = user(h, f"lead-{secrets.token_hex(3)}", "engineer", "approver")
    promotion = await awaiting_sign_off(h, lead, override=REQUESTER_MAY_SIGN)
    allows = (await h.state(promotion)).sign_off
    assert allows is not None and h.read(promotion).sign_off == allows.model_dump(mode="json")

    decide = h.registry.promotions.authorize_decision
    assert decide(lead.actor, promotion.id, "sign_off").id == promotion.id
    with pytest.raises(InvalidParameterError, match="^A rejection needs a reason.$"):
        decide(h.approver, promotion.id, "reject", comment=" ")
    assert decide(h.approver, promotion.id, "reject").id == promotion.id
    other = await awaiting_sign_off(h, lead)  # the default rule: the requester may not sign off
    with pytest.raises(PermissionDeniedError, match="separation of duties"):
        decide(lead.actor, other.id, "sign_off")


# ------------------------------------------------------------------------------ a rejection needs a reason


@pytest.mark.parametrize("reason", ["", "   ", " \n\t\u3000"])
async def test_a_blank_rejection_reason_is_400_through_the_api(
    harness: Harness, api: httpx.AsyncClient, reason: str
) -> None:
    h = harness
    lead = user(h, f"ds-lead-{secrets.token_hex(3)}", "approver")
    promotion = await awaiting_sign_off(h, user(h, f"eng-{secrets.token_hex(3)}", "engineer"))

    response = await api.post(f"/api/v1/promotions/{promotion.id}/reject", json={"reason": reason},
                              headers=lead.auth)

    assert error(response, 400, "INVALID_PARAMETER_VALUE") == "A rejection needs a reason."
    refusal = await workflow_refusal(h, promotion, PromotionWorkflow.reject,
                                     Decision(user=lead.name, roles=["approver"], comment=reason))
    assert (refusal.type, refusal.message) == ("INVALID_PARAMETER_VALUE", "A rejection needs a reason.")
    state = await h.state(promotion)
    assert (state.status, state.stop) == (S.AWAITING_SIGN_OFF, None)


async def test_a_blank_rejection_reason_is_shown_on_the_page_as_a_400(
    harness: Harness, api: httpx.AsyncClient
) -> None:
    h = harness
    lead = user(h, f"ds-lead-{secrets.token_hex(3)}", "approver")
    promotion = await awaiting_sign_off(h, user(h, f"eng-{secrets.token_hex(3)}", "engineer"))
    csrf = await signed_in(api, lead)
    page = f"/ui/promotions/{promotion.id}"

    blank = await api.post(f"{page}/reject", data={"comment": "  \n ", "csrf_token": csrf},
                           headers={**HTML, "referer": f"http://testserver{page}"})

    assert blank.status_code == 400, blank.text
    assert blank.headers["content-type"].startswith("text/html")
    assert "A rejection needs a reason." in html.unescape(blank.text)
    assert (await h.state(promotion)).status == S.AWAITING_SIGN_OFF

    done = await api.post(f"{page}/reject", data={"comment": "holdout overlaps training", "csrf_token": csrf},
                          headers={**HTML, "referer": f"http://testserver{page}"})
    assert done.status_code == 303, done.text
    assert (await h.outcome(promotion)).status == S.REJECTED


# ------------------------------------------------------------------------------ why it stopped, as data


async def test_who_stopped_a_promotion_and_why_is_a_field_of_its_state(
    harness: Harness, api: httpx.AsyncClient
) -> None:
    h = harness
    # A name the old "rejected by <who>: <why>" parsing split in the wrong place.
    lead = user(h, f"dana: risk lead {secrets.token_hex(3)}", "approver")
    promotion = await awaiting_sign_off(h, user(h, f"eng-{secrets.token_hex(3)}", "engineer"))
    reason = "holdout overlaps training: see ticket 12"

    response = await api.post(f"/api/v1/promotions/{promotion.id}/reject", json={"reason": f"  {reason} "},
                              headers=lead.auth)

    assert response.status_code == 200, response.text
    assert response.json()["stop"] == {"status": "rejected", "by": lead.name, "reason": reason}
    outcome = await h.outcome(promotion)
    assert (outcome.status, outcome.message) == (S.REJECTED, f"rejected by {lead.name}: {reason}")
    assert (await h.state(promotion)).stop == StopReason(status=S.REJECTED, by=lead.name, reason=reason)
    assert h.read(promotion).message == f"rejected by {lead.name}: {reason}"
    [notice] = [n for n in h.notifications(promotion) if n.kind == "rejected"]
    assert f"was rejected by {lead.name}.\n" in notice.body and f"Reason: {reason}\n" in notice.body


async def test_a_cancellation_without_a_reason_names_only_who(harness: Harness) -> None:
    h = harness
    promotion = await awaiting_sign_off(h, user(h, f"eng-{secrets.token_hex(3)}", "engineer"))

    state = await h.decide(h.admin, promotion, "cancel")

    assert state.stop == StopReason(status=S.CANCELLED, by=h.admin.name)
    assert (await h.outcome(promotion)).message == f"cancelled by {h.admin.name}"
    [notice] = [n for n in h.notifications(promotion) if n.kind == "cancelled"]
    assert f"was cancelled by {h.admin.name}." in notice.body and "Reason" not in notice.body
