"""Sign-off from the right people through the real engine (issue 13 items 2 and 3).

A high-tier model (the policy's ``[tiers.high…]`` overlay) needs one sign-off from churn-leads and one
from model-risk; the author of the candidate's training run (its ``mlflow.user`` on a real tracking
server) may not sign, neither through the registry nor straight to the workflow; a churn-leads-only
policy refuses a model-risk member. The signers' groups are real memberships their tokens carry; the
worker, the activities, the registry and the tracking server are real.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from temporalio.testing import WorkflowEnvironment

from activities.promotion import run_author
from calabi.api.app import create_app
from policies.run_authorship import AuthorSource, RunAuthor
from policies.status import PromotionStatus
from registry_store.artifacts.tracking_client import TrackingClient
from registry_store.audit import Actor
from registry_store.entities import ModelVersion, Promotion
from registry_store.errors import RegistryError, UnavailableError
from tests.fixtures.servers import free_port
from tests.fixtures.tracking import TrackingServer
from tests.workflows.conftest import Harness, running_harness, wait_until
from tests.workflows.test_decision_rules import signed_in, user, workflow_refusal
from workflows.models import Decision
from workflows.promotion import PromotionWorkflow

S = PromotionStatus
CHURN, RISK = "churn-leads", "model-risk"
HIGH_TIER = f"""
[tiers.high.production.sign_off]
expires_after = "2d"

[[tiers.high.production.sign_off.from]]
group = "{CHURN}"
count = 1

[[tiers.high.production.sign_off.from]]
group = "{RISK}"
count = 1
"""
CHURN_ONLY = f'[[production.sign_off.from]]\ngroup = "{CHURN}"\ncount = 1\n'


@pytest_asyncio.fixture
async def tracked(ts_env: WorkflowEnvironment, tmp_path: Path, tracking_server: TrackingServer
                  ) -> AsyncIterator[Harness]:
    """The harness with the tracking server a candidate's run author is read from."""
    async with running_harness(ts_env, tmp_path, mlflow_tracking_url=tracking_server.url) as h:
        yield h


@pytest_asyncio.fixture
async def tracked_api(tracked: Harness) -> AsyncIterator[httpx.AsyncClient]:
    """The real app over the tracked harness's services."""
    app = create_app(dataclasses.replace(tracked.services, promotions=tracked.promotions))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as client:
        yield client


async def set_tier(api: httpx.AsyncClient, h: Harness, model: str) -> None:
    """``PUT /api/v1/models/{name}/risk-tier``: MANAGE only (an approver has READ), declared tiers, audited."""
    admin, lead = user(h, f"root-{secrets.token_hex(3)}", "admin"), user(h, f"lead-{secrets.token_hex(3)}", "approver")
    path = f"/api/v1/models/{model}/risk-tier"
    assert (await api.put(path, json={"tier": "high"}, headers=lead.auth)).status_code == 403
    unknown = await api.put(path, json={"tier": "medium"}, headers=admin.auth)
    assert unknown.status_code == 400 and unknown.json() == {
        "error_code": "INVALID_PARAMETER_VALUE", "message": "Unknown risk tier 'medium'; the policy declares: high."}
    response = await api.put(path, json={"tier": "high"}, headers=admin.auth)
    assert response.status_code == 200 and response.json()["risk_tier"] == "high", response.text
    assert (await api.get(f"/api/v1/models/{model}", headers=lead.auth)).json()["risk_tier"] == "high"
    [event] = [e for e in h.audit(model) if e.action == "set_risk_tier"]
    assert (event.actor, event.before, event.after) == (admin.name, {"risk_tier": None}, {"risk_tier": "high"})


def approver(h: Harness, prefix: str, *groups: str) -> Actor:
    """A new approver, a member of ``groups`` (created when missing), as their token authenticates."""
    name = f"{prefix}-{secrets.token_hex(3)}"
    _, token = h.services.users.create_user(h.admin, name=name, roles=["approver"])
    for group in groups:
        if group not in {g.name for g in h.services.groups.list_groups(h.admin)}:
            h.services.groups.create_group(h.admin, name=group)
        h.services.groups.add_member(h.admin, group=group, user=name)
    actor = h.services.users.authenticate(token)
    assert actor.groups == frozenset(groups)
    return actor


def training_run(url: str, user: str) -> str:
    """A run on the tracking server whose ``mlflow.user`` is ``user``; its id."""
    response = httpx.post(f"{url}/api/2.0/mlflow/runs/create", timeout=30, json={
        "experiment_id": "0", "tags": [{"key": "mlflow.user", "value": user}]})
    response.raise_for_status()
    return str(response.json()["run"]["info"]["run_id"])


async def refused(h: Harness, actor: Actor, promotion: Promotion) -> RegistryError:
    with pytest.raises(RegistryError) as info:
        await h.decide(actor, promotion, "sign_off")
    return info.value


async def test_run_author_refused_and_a_high_tier_model_needs_two_groups(
        tracked: Harness, tracked_api: httpx.AsyncClient, tracking_server: TrackingServer) -> None:
    h = tracked
    with (h.policy_dir / "default.toml").open("a") as default:
        default.write(HIGH_TIER)
    trainer, lead, lead2 = approver(h, "trainer", CHURN), approver(h, "churn-lead", CHURN), approver(h, "lead2", CHURN)
    risk, both = approver(h, "risk", RISK), approver(h, "both", CHURN, RISK)
    high = h.register(candidate_run_id=training_run(tracking_server.url, trainer.name))
    await set_tier(tracked_api, h, high)
    churn = f"churn-{secrets.token_hex(4)}"
    h.override(churn, CHURN_ONLY)
    h.register(churn)
    p_high, p_churn = await h.request(model=high), await h.request(model=churn)
    await asyncio.gather(h.wait_for(p_high, S.AWAITING_SIGN_OFF), h.wait_for(p_churn, S.AWAITING_SIGN_OFF))

    read = h.read(p_high)
    assert (read.risk_tier, read.run_author, read.required_approvals) == ("high", trainer.name, 2)
    assert (read.run_author_source, h.read(p_churn).run_author_source) == ("client", "registration")
    assert read.sign_off is not None and [q["group"] for q in read.sign_off["from"]] == [CHURN, RISK]
    assert (h.read(p_churn).risk_tier, h.read(p_churn).run_author) == (None, h.requester.name)  # no run: registrant
    viewer = user(h, f"viewer-{secrets.token_hex(3)}", "viewer")
    await signed_in(tracked_api, viewer)
    desk = (await tracked_api.get("/ui/promotions")).text
    assert re.search(rf'{high} v2 → Production</a>.*?<td class="risk-tier"><span class="chip">high</span>', desk, re.S)
    page = (await tracked_api.get(f"/ui/promotions/{p_high.id}")).text
    assert '<dd id="risk-tier"><span class="chip">high</span></dd>' in page
    assert f'<dd id="run-author">{trainer.name} <span class="muted">(claimed by the client)</span>' in page

    # The run's author is refused by the registry and by the workflow's own validator.
    error = await refused(h, trainer, p_high)
    assert error.error_code == "PERMISSION_DENIED" and "author of the candidate's training run" in error.message
    direct = Decision(user=trainer.name.upper(), roles=["approver"], groups=[CHURN, RISK])
    assert (await workflow_refusal(h, p_high, PromotionWorkflow.sign_off, direct)).type == "PERMISSION_DENIED"

    # A churn-leads-only quorum refuses model risk; a churn lead completes it.
    error = await refused(h, risk, p_churn)
    assert error.error_code == "PERMISSION_DENIED" and "in none of these groups" in error.message
    await h.decide(lead, p_churn, "sign_off")

    # High tier: one churn lead is not enough, a second one has no slot, someone in both groups fills model-risk.
    await h.decide(lead, p_high, "sign_off")
    await wait_until(lambda: len(h.read(p_high).approvals) == 1, "the first sign-off recorded")
    error = await refused(h, lead2, p_high)
    assert error.error_code == "RESOURCE_CONFLICT" and "still needed: model-risk (1)" in error.message
    assert (await h.state(p_high)).status == S.AWAITING_SIGN_OFF
    await h.decide(both, p_high, "sign_off")

    assert ((await h.outcome(p_churn)).status, (await h.outcome(p_high)).status) == (S.PROMOTED, S.PROMOTED)
    signed = [(e.actor, e.after["groups"]) for e in h.audit(high) if e.action == "sign_off_promotion"]
    assert signed == [(lead.name, [CHURN]), (both.name, [CHURN, RISK])]


def test_run_author_comes_from_the_tracking_server_else_the_registrant(tracking_server: TrackingServer) -> None:
    """The run's ``mlflow.user`` (claimed by the client: logged straight to the tracking server); a run the server
    does not know: the registrant; a server that is down: an error the activity retries (never "no author")."""
    run_id = training_run(tracking_server.url, "Erin")
    known = ModelVersion.model_construct(run_id=run_id, user_id="registrant")
    unknown = ModelVersion.model_construct(run_id="0" * 32, user_id="registrant")
    with TrackingClient(tracking_server.url) as tracking:
        assert run_author(known, tracking) == RunAuthor(name="Erin", source=AuthorSource.CLIENT)
        assert run_author(unknown, tracking) == RunAuthor(name="registrant", source=AuthorSource.REGISTRATION)
    assert run_author(known, None).name == "registrant"  # no tracking server configured
    with TrackingClient(f"http://127.0.0.1:{free_port()}", timeout=5) as down, pytest.raises(UnavailableError):
        run_author(known, down)
