"""A check that could not be evaluated is never a verdict: the promotion pauses in ``check_error``.

Real failures only: the registry's copy of the candidate is altered (the test run refuses to
run it), and a model's policy file is broken (the evidence snapshot cannot be taken). Each
promotion names the cause, is announced as a check error, waits for a re-check exactly like
``checks_failed``, and proceeds once the cause is fixed.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from policies.status import PromotionStatus
from registry_store.entities import Promotion
from registry_store.errors import PermissionDeniedError
from tests.workflows.conftest import Harness, wait_until

S = PromotionStatus
TESTS_BY_COMMAND = '[production.tests]\nmode = "command"\ncommand = ["true"]\n'
BROKEN_POLICY = "[production.sign_off\napprovers = 2\n"


def alter_stored_copy(h: Harness, model: str, version: int = 2) -> None:
    """Append to a file of the registry's copy of the version (its digest no longer matches)."""
    location = h.version(model, version).storage_location
    root = Path(unquote(urlsplit(location).path)) if "://" in location else Path(location)
    pickle = next(root.rglob("model.pkl"))
    pickle.write_bytes(pickle.read_bytes() + b"tampered")


async def recheck_window_open(h: Harness, promotion: Promotion) -> None:
    await wait_until(lambda: h.read(promotion).deadline is not None, "the re-check window")


async def check_error_then_recheck(h: Harness) -> Promotion:
    """The test run cannot run the altered copy → check_error; the policy goes back to attestation → re-checked."""
    model = h.register()
    h.override(model, TESTS_BY_COMMAND)
    alter_stored_copy(h, model)
    promotion = await h.request(model=model)
    await h.wait_for(promotion, S.CHECK_ERROR)
    await recheck_window_open(h, promotion)
    (h.policy_dir / "models" / f"{model}.toml").unlink()
    await h.decide(h.requester, promotion, "recheck", "the CI attestation is the test evidence")
    await h.wait_for(promotion, S.AWAITING_SIGN_OFF)
    return promotion


async def test_checks_that_could_not_run_pause_in_check_error_until_rechecked(harness: Harness) -> None:
    h = harness
    broken_model = h.register()
    h.override(broken_model, BROKEN_POLICY)
    broken = await h.request(model=broken_model)
    tests_run = asyncio.create_task(check_error_then_recheck(h))

    paused = await h.wait_for(broken, S.CHECK_ERROR)
    assert paused.message.startswith("the evidence snapshot could not be taken: ")
    read = h.read(broken)
    assert (read.status, read.live, read.message) == ("check_error", True, paused.message)
    await recheck_window_open(h, broken)
    assert [n.kind for n in h.notifications(broken)] == ["requested", "check_error"]
    notice = h.notifications(broken)[-1].body
    assert "could not be evaluated" in notice and "the evidence snapshot could not be taken" in notice
    with pytest.raises(PermissionDeniedError):
        await h.decide(h.stranger, broken, "recheck")
    h.override(broken_model, "")
    await h.decide(h.requester, broken, "recheck", "fixed the policy file")
    await h.wait_for(broken, S.AWAITING_SIGN_OFF)

    promotion = await tests_run
    history = [(c.status, c.note) for c in (await h.state(promotion)).history]
    assert [status for status, _ in history] == [
        S.RUNNING_CHECKS, S.CHECK_ERROR, S.RUNNING_CHECKS, S.AWAITING_SIGN_OFF]
    assert history[1][1].startswith("the test run could not complete: ") and "digest" in history[1][1]
    assert [n.kind for n in h.notifications(promotion)] == ["requested", "check_error", "awaiting"]
    assert all(e.after.get("status") != "checks_failed" for e in h.audit(promotion.model_name)
               if e.action == "promotion_state" and isinstance(e.after, dict))
