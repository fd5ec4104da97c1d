"""``GET /api/v1/models/{name}/production-history``: which version was Production when, through the real API.

Production moves by every route there is: an admin's break-glass transition, a promotion
applied by the workflow (real Temporal, real activities), a rollback, another break-glass and
an admin taking Production away. ``?at=`` is then asked about each boundary, in epoch
milliseconds and in ISO-8601.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest
import pytest_asyncio

from calabi.api.app import create_app
from policies.status import PromotionStatus as S
from tests.workflows.conftest import Harness

API = "/api/v1/models/{name}/production-history"


@pytest_asyncio.fixture
async def api(harness: Harness) -> AsyncIterator[httpx.AsyncClient]:
    """The real app over the harness's services, called in-process as a viewer (token in the header)."""
    _user, token = harness.services.users.create_user(harness.admin, name="auditor", roles=["viewer"])
    transport = httpx.ASGITransport(app=create_app(harness.services))
    async with httpx.AsyncClient(
        transport=transport, base_url="http://calabi.test", headers={"Authorization": f"Bearer {token}"}
    ) as client:
        yield client


async def _model_page_production_versions(api: httpx.AsyncClient, model: str) -> list[int]:
    """The versions the model page's Production history table lists, top to bottom (signed in as a viewer)."""
    form = await api.get("/ui/sign-in")
    sign_in_token = re.search(r'name="sign_in_token" value="([^"]+)"', form.text)
    assert sign_in_token
    signed_in = await api.post("/ui/sign-in", data={"sign_in_token": sign_in_token.group(1),
                                                    "token": api.headers["authorization"].split()[1],
                                                    "next": "/ui/models"})
    assert signed_in.status_code == 303, signed_in.text
    page = await api.get(f"/ui/models/{model}", headers={"accept": "text/html"})
    assert page.status_code == 200, page.text[:2000]
    table = page.text.split('id="production-h"', 1)[1].split('id="timeline-h"', 1)[0]
    return [int(v) for v in re.findall(r">v(\d+)</a></th>", table)]


async def _promote(h: Harness, model: str, *, rollback: bool) -> None:
    promotion = await (h.rollback(h.requester, model=model) if rollback else h.request(model=model))
    await h.wait_for(promotion, S.AWAITING_SIGN_OFF)
    await h.decide(h.approver2 if rollback else h.approver, promotion, "sign_off", "ok")
    assert (await h.outcome(promotion)).status == S.PROMOTED


async def _at(api: httpx.AsyncClient, model: str, at: int | str) -> int | None:
    response = await api.get(API.format(name=model), params={"at": str(at)})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["version"] == (body["stint"]["version"] if body["stint"] else None)
    version: int | None = body["version"]
    return version


def _iso(ms: int, *, zulu: bool = True) -> str:
    moment = datetime.fromtimestamp(ms / 1000, UTC)
    return moment.isoformat().replace("+00:00", "Z") if zulu else moment.replace(tzinfo=None).isoformat()


async def test_production_at_any_instant_across_promotion_rollback_and_break_glass(
    harness: Harness, api: httpx.AsyncClient
) -> None:
    h = harness
    model = h.register()  # v1 Production by the admin's break-glass, v2 Staging
    await _promote(h, model, rollback=False)  # v2 Production (v1 archived)
    await _promote(h, model, rollback=True)  # v1 Production again (v2 archived)
    await asyncio.sleep(0.01)  # distinct milliseconds for the two direct moves below
    await asyncio.to_thread(h.registry.stages.transition_stage, h.admin, name=model, version=2, stage="Production")
    await asyncio.sleep(0.01)
    await asyncio.to_thread(h.registry.stages.transition_stage, h.admin, name=model, version=2, stage="Archived")

    response = await api.get(API.format(name=model))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["name"] == model
    glass2, rolled_back, promoted, glass1 = body["stints"]  # newest first
    assert [s["version"] for s in body["stints"]] == [2, 1, 2, 1]
    assert (glass1["break_glass"], glass1["moved_by"], glass1["promotion"]) == (True, h.admin.name, None)
    assert (promoted["break_glass"], promoted["moved_by"], promoted["approved_by"]) == (
        False, h.requester.name, [h.approver.name])
    assert promoted["why"] == "beats Production on auc" and promoted["promotion"]
    assert (rolled_back["moved_by"], rolled_back["approved_by"], rolled_back["why"]) == (
        h.requester.name, [h.approver2.name], "v2 misbehaves")
    assert (glass2["break_glass"], glass2["moved_by"], glass2["ended_by"]) == (True, h.admin.name, h.admin.name)
    for earlier, later in ((glass1, promoted), (promoted, rolled_back), (rolled_back, glass2)):
        assert earlier["until"] == later["since"]
    t1, t2, t3, t4, t5 = glass1["since"], promoted["since"], rolled_back["since"], glass2["since"], glass2["until"]
    assert t1 < t2 < t3 < t4 < t5

    expected = {
        t1 - 1: None,  # before any version was Production
        t1: 1, t2 - 1: 1,
        t2: 2, t3 - 1: 2,  # the promotion's apply is the exact boundary
        t3: 1, t4 - 1: 1,  # after the rollback
        t4: 2, t5 - 1: 2,  # break-glass
        t5: None,  # Production taken away, nothing since
    }
    assert {at: await _at(api, model, at) for at in expected} == expected
    assert await _at(api, model, _iso(t2)) == 2
    assert await _at(api, model, _iso(t2 - 1, zulu=False)) == 1
    assert await _at(api, model, _iso(t3)) == 1
    assert await _model_page_production_versions(api, model) == [2, 1, 2, 1]  # the page shows the same query


@pytest.mark.parametrize("at", ["yesterday", "2025-13-01", "", "1.5"])
async def test_a_bad_instant_is_a_400_in_the_mlflow_error_shape(
    harness: Harness, api: httpx.AsyncClient, at: str
) -> None:
    await asyncio.to_thread(harness.registry.models.create_registered_model, harness.requester, name="churn")

    response = await api.get(API.format(name="churn"), params={"at": at})

    assert response.status_code == 400
    body = response.json()
    assert body["error_code"] == "INVALID_PARAMETER_VALUE" and "'at'" in body["message"]


async def test_a_model_never_in_production_has_no_history_and_unknown_models_are_404(
    harness: Harness, api: httpx.AsyncClient
) -> None:
    h = harness
    await asyncio.to_thread(h.registry.models.create_registered_model, h.requester, name="fresh")

    assert (await api.get(API.format(name="fresh"))).json() == {"name": "fresh", "stints": []}
    assert await _at(api, "fresh", "2030-01-01T00:00:00Z") is None
    missing = await api.get(API.format(name="nope"), params={"at": "0"})
    assert (missing.status_code, missing.json()["error_code"]) == (404, "RESOURCE_DOES_NOT_EXIST")
