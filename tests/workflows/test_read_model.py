"""The read model is the one view of a promotion: nothing shows a status before the registry's row has it.

Several promotions run at once while the test reads the workflow's query and then the row
as fast as it can: the query (a fallback read) never runs ahead of the row, and a sign-off
sent the moment the row says awaiting_sign_off is accepted.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from policies.status import PromotionStatus
from registry_store.entities import Promotion
from tests.workflows.conftest import WAIT_S, Harness, describe, wait_until

S = PromotionStatus
ORDER = [S.RUNNING_CHECKS, S.AWAITING_SIGN_OFF, S.APPLYING, S.PROMOTED]
PROMOTIONS = 4


async def follow(h: Harness, promotion: Promotion) -> list[tuple[S, S]]:
    """(query, row) status pairs until promoted; signs off as soon as the row awaits sign-off."""
    seen: list[tuple[S, S]] = []
    signed = False
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        queried = (await h.state(promotion)).status
        row = S((await asyncio.to_thread(h.read, promotion)).status)  # read after the query
        seen.append((queried, row))
        if row == S.AWAITING_SIGN_OFF and not signed:
            await h.decide(h.approver, promotion, "sign_off")  # never "is running_checks"
            signed = True
        if row == S.PROMOTED:
            return seen
        await asyncio.sleep(0)  # as fast as the loop allows, bounded by the deadline
    pytest.fail(f"not promoted within {WAIT_S} s: {seen[-1:]}")


async def test_the_query_never_runs_ahead_of_the_row_and_decisions_agree_with_it(harness: Harness) -> None:
    h = harness
    promotions = [await h.request(model=h.register()) for _ in range(PROMOTIONS)]

    followed = await asyncio.gather(*(follow(h, p) for p in promotions))

    for seen in followed:
        ahead = [(q, r) for q, r in seen if ORDER.index(q) > ORDER.index(r)]
        assert not ahead, f"the query showed a status the row did not have yet: {ahead[:3]}"


async def test_a_read_right_after_a_recheck_never_shows_the_failure_it_replaces(harness: Harness) -> None:
    h = harness
    model = h.register(candidate_description=describe(0.91, 0.38, date_range=False))
    promotion = await h.request(model=model)
    await h.wait_for(promotion, S.CHECKS_FAILED)
    await wait_until(lambda: h.read(promotion).deadline is not None, "the re-check window")
    h.registry.versions.update_model_version(h.requester, name=model, version=2, description=describe(0.91, 0.38))

    await h.decide(h.requester, promotion, "recheck", "added the date range")

    assert h.read(promotion).status != S.CHECKS_FAILED  # the answer came after the row moved on
    await h.wait_for(promotion, S.AWAITING_SIGN_OFF)
