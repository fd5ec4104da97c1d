"""The issue's browser flows: sign in, browse, the seed's Stage dialog, register, promote, sign off, watch.

Runs in order (one server, one browser): each test builds on the registry state the previous left.
"""

from __future__ import annotations

import re
import secrets
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.browser.helpers import CHROMIUM, Team, churn_artifact, new_context, sign_in
from tests.fixtures.servers import LiveServer

# `make test` installs Debian's chromium (EXTRA_DEB_PACKAGES in the Makefile); without it these tests fail.
assert CHROMIUM.exists(), f"{CHROMIUM} missing: apt-get install chromium"

MODEL = f"churn-predictor-{secrets.token_hex(3)}"
PROMOTION_TIMEOUT_MS = 90_000
GOOD_DESCRIPTION = (
    "Gradient-boosted churn classifier trained on customer snapshots from 2024-01-01 to 2025-06-30. "
    "Holdout auc: 0.88, log_loss 0.39."
)


@pytest.fixture(scope="module", autouse=True)
def seeded(server: LiveServer) -> None:
    """The model with version 1 in Production (an admin's break-glass), plus a few others to browse."""
    v1 = churn_artifact(server.source_root, auc=0.82, log_loss=0.40)
    with server.client() as admin:
        for name, tags in ((MODEL, {"owner": "alice@example.com", "use_case": "retention_scoring"}),
                           (f"fraud-scorer-{secrets.token_hex(3)}", {"owner": "dan@example.com"}),
                           (f"ltv-forecast-{secrets.token_hex(3)}", {})):
            admin.post("/api/v1/models", json={"name": name, "description": "Monthly churn risk per customer."
                                               if name == MODEL else "", "tags": tags}).raise_for_status()
        admin.post(f"/api/v1/models/{MODEL}/versions", json={
            "source": str(v1), "run_id": "3f8c2a1b9e4d",
            "description": "Churn v1 trained on 2023-01-01 to 2024-06-30, auc 0.82.",
            "tags": {"ci.tests_passed": "true"},
        }).raise_for_status()
        admin.post(f"/api/v1/models/{MODEL}/versions/1/stage", json={"stage": "Production"}).raise_for_status()


def shot(page: Page, folder: Path, name: str) -> None:
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


def test_sign_in_and_browse_models(browser: Browser, server: LiveServer, team: Team, screenshots: Path) -> None:
    context = new_context(browser, server)
    page = context.new_page()
    page.goto("/ui/models")  # no session: the sign-in page, coming back here afterwards
    expect(page).to_have_url(re.compile(r"/ui/sign-in\?next="))
    shot(page, screenshots, "01-sign-in")
    page.get_by_label("API token").fill("not-a-token")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("not valid")
    page.get_by_label("API token").fill(team.engineer.token)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(r"/ui/models$"))
    expect(page.get_by_role("status")).to_contain_text(f"Signed in as {team.engineer.name}")

    row = page.get_by_role("row").filter(has=page.get_by_role("link", name=MODEL, exact=True))
    expect(row).to_contain_text("Production v1")
    expect(row).to_contain_text("owner=alice@example.com")
    shot(page, screenshots, "02-models")

    page.get_by_label("Search").fill("fraud")  # a plain word searches names
    page.get_by_role("button", name="Search").click()
    expect(page.get_by_role("link", name=MODEL)).to_have_count(0)
    expect(page.get_by_role("link", name=re.compile("^fraud-scorer-"))).to_have_count(1)
    page.get_by_label("Search").fill("tags.use_case = 'retention_scoring'")  # the MLflow filter grammar
    page.get_by_role("button", name="Search").click()
    expect(page.get_by_role("link", name=MODEL, exact=True)).to_be_visible()
    page.get_by_label("Search").fill("name LIKE")
    page.get_by_role("button", name="Search").click()
    expect(page.get_by_role("alert")).to_contain_text("not understood")

    page.goto(f"/ui/models/{MODEL}")
    versions = page.locator("#versions")
    expect(versions.get_by_role("columnheader")).to_have_text(
        ["Version", "Stage", "Created", "Run ID", "Description", "Aliases"])
    expect(versions.get_by_role("row").nth(1)).to_contain_text("3f8c2a1b9e4d")
    # Times are shown in the viewer's zone (the <time> text is rewritten from its UTC datetime).
    expect(versions.locator("time").first).not_to_contain_text("UTC")
    context.close()


def test_register_from_a_run(browser: Browser, server: LiveServer, team: Team, screenshots: Path) -> None:
    source = churn_artifact(server.source_root, auc=0.88, log_loss=0.39)
    context = new_context(browser, server)
    page = sign_in(context, team.engineer)
    page.get_by_role("link", name="Register a model").first.click()
    expect(page.get_by_role("link", name="Pick a run's model folder")).to_be_visible()
    page.get_by_label("Model", exact=True).fill(MODEL)  # an existing model (offered in the datalist)
    page.get_by_label("Model artifact folder").fill(str(source))
    page.get_by_label("Run ID (optional)").fill("9a7e41c0d2b3")
    page.get_by_label("Description (optional)").fill(GOOD_DESCRIPTION)
    shot(page, screenshots, "03-register")
    page.get_by_role("button", name="Register").click()
    expect(page).to_have_url(re.compile(rf"/ui/models/{MODEL}/versions/2$"))
    expect(page.get_by_role("status")).to_contain_text("Registered version 2")
    expect(page.locator("dl.details")).to_contain_text("9a7e41c0d2b3")
    expect(page.get_by_role("table", name="Metrics recorded with the artifact")).to_contain_text("0.88")

    # A new name creates the model; a bad source comes back on the form with the message.
    page.goto("/ui/register")
    new_name = f"upsell-{secrets.token_hex(3)}"
    page.get_by_label("Model", exact=True).fill(new_name)
    page.get_by_label("Model artifact folder").fill("/nowhere/model")
    page.get_by_role("button", name="Register").click()
    expect(page.get_by_role("alert")).to_be_visible()
    expect(page.get_by_label("Model", exact=True)).to_have_value(new_name)
    page.get_by_label("Model artifact folder").fill(str(churn_artifact(server.source_root, auc=0.7, log_loss=0.5)))
    page.get_by_role("button", name="Register").click()
    expect(page).to_have_url(re.compile(rf"/ui/models/{new_name}/versions/1$"))
    expect(page.get_by_role("status")).to_contain_text(f"Created model {new_name}")
    context.close()


def test_the_seeds_transition_flow_through_the_dialog(
    browser: Browser, server: LiveServer, team: Team, screenshots: Path
) -> None:
    context = new_context(browser, server)
    page = sign_in(context, team.engineer)
    page.goto(f"/ui/models/{MODEL}")
    page.get_by_role("link", name="Version 2", exact=True).click()  # the version number opens its page
    page.locator("summary", has_text="Stage").click()
    page.get_by_role("link", name="Transition to Staging").click()
    dialog = page.get_by_role("dialog", name="Transition version 2 to Staging")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("Version 2 moves from None to Staging")
    expect(dialog).to_contain_text("No other version changes")
    shot(page, screenshots, "04-stage-dialog-staging")
    dialog.get_by_role("button", name="Transition to Staging").click()
    expect(page.get_by_role("status")).to_contain_text("Version 2 is now in Staging")
    expect(page.locator("h1 .badge")).to_have_text("Staging")

    # The Production entry is governed: the dialog says what will happen and asks for a justification.
    page.locator("summary", has_text="Stage").click()
    page.get_by_role("link", name="Transition to Production").click()
    dialog = page.get_by_role("dialog", name="Transition version 2 to Production")
    expect(dialog).to_contain_text("promotion request")
    expect(dialog).to_contain_text("version 1 (now Production) is archived")
    shot(page, screenshots, "05-stage-dialog-production")
    dialog.get_by_role("link", name="Cancel").click()
    expect(dialog).to_be_hidden()
    context.close()


def test_promotion_from_the_dialog_signed_off_by_an_approver(
    browser: Browser, server: LiveServer, team: Team, screenshots: Path
) -> None:
    engineer_context = new_context(browser, server)
    page = sign_in(engineer_context, team.engineer)
    page.goto(f"/ui/models/{MODEL}/versions/2")
    # The CI attestation the tests check reads, set through the tag form.
    page.get_by_text("Add or change a tag").click()
    page.get_by_label("Key").fill("ci.tests_passed")
    page.get_by_label("Value").fill("true")
    page.get_by_role("button", name="Save tag").click()
    expect(page.get_by_role("status")).to_contain_text("Tag ci.tests_passed saved")

    page.locator("summary", has_text="Stage").click()
    page.get_by_role("link", name="Transition to Production").click()
    dialog = page.get_by_role("dialog", name="Transition version 2 to Production")
    dialog.get_by_label("Justification (required)").fill("auc up from 0.82 to 0.88 on the Q2 holdout")
    dialog.get_by_role("button", name="Submit promotion request").click()
    expect(page).to_have_url(re.compile(r"/ui/promotions/[0-9a-f]+$"))
    promotion_url = page.url
    status = page.locator("#promotion-status")
    # Live status: the page follows the checks by itself until sign-off is awaited.
    expect(status).to_contain_text("awaiting sign off", timeout=PROMOTION_TIMEOUT_MS)
    checks = page.locator("li.check")
    expect(checks).to_have_count(5)
    metrics = page.locator("li.check", has=page.get_by_role("heading", name=re.compile("metrics")))
    expect(metrics.get_by_role("row", name=re.compile("auc"))).to_contain_text("0.88")
    expect(metrics.get_by_role("row", name=re.compile("auc"))).to_contain_text("0.82")
    # The page says why the service would refuse this user's sign-off (policies.decisions).
    expect(page.get_by_text("may not sign off this promotion: the 'approver' role is required")).to_be_visible()
    expect(page.get_by_role("button", name="Sign off")).to_have_count(0)
    shot(page, screenshots, "06-promotion-awaiting")

    approver_context = new_context(browser, server)
    desk = sign_in(approver_context, team.approver)
    desk.get_by_role("link", name="Approvals").click()
    awaiting = desk.locator("#awaiting")
    expect(awaiting).to_contain_text(f"{MODEL} v2 → Production")
    shot(desk, screenshots, "07-approvals-desk")
    awaiting.get_by_role("link", name=f"{MODEL} v2 → Production").click()
    expect(desk).to_have_url(promotion_url)
    expect(desk.get_by_role("button", name="Reject")).to_be_visible()
    desk.get_by_label("Comment (optional)").fill("Reviewed the holdout and the leakage report.")
    desk.get_by_role("button", name="Sign off").click()
    expect(desk.get_by_role("status").first).to_contain_text("Signed off")

    # The requester's page, untouched, follows the promotion to the end.
    expect(status).to_contain_text("promoted", timeout=PROMOTION_TIMEOUT_MS)
    expect(page.locator(".signoffs")).to_contain_text(team.approver.name)
    shot(page, screenshots, "08-promotion-promoted")
    page.get_by_role("link", name=f"{MODEL} version 2").click()
    expect(page.locator("h1 .badge")).to_have_text("Production")
    expect(page.get_by_text("@champion").first).to_be_visible()
    shot(page, screenshots, "09-version-production")
    page.goto(f"/ui/models/{MODEL}")
    history = page.get_by_role("table", name=re.compile("Which version was Production when"))
    first, second = history.get_by_role("row").nth(1), history.get_by_role("row").nth(2)
    expect(first).to_contain_text("v2")
    expect(first).to_contain_text("now")
    expect(first).to_contain_text(f"approved by {team.approver.name}")
    expect(first).to_contain_text("auc up from 0.82 to 0.88")
    expect(second).to_contain_text("v1")
    expect(page.locator("ol.timeline")).to_contain_text("moved version 2 from Staging to Production, archiving v1")
    shot(page, screenshots, "10-model")
    engineer_context.close()
    approver_context.close()


def test_failed_checks_are_shown_and_an_approver_rejects_with_a_reason(
    browser: Browser, server: LiveServer, team: Team, screenshots: Path
) -> None:
    weaker = churn_artifact(server.source_root, auc=0.80, log_loss=0.45)
    with server.client(team.engineer.token) as api:
        api.post(f"/api/v1/models/{MODEL}/versions", json={
            "source": str(weaker), "description": GOOD_DESCRIPTION, "tags": {"ci.tests_passed": "true"}
        }).raise_for_status()
        api.post(f"/api/v1/models/{MODEL}/versions/3/stage", json={"stage": "Staging"}).raise_for_status()
    engineer_context = new_context(browser, server)
    page = sign_in(engineer_context, team.engineer)
    page.goto(f"/ui/models/{MODEL}/versions/3")
    page.locator("summary", has_text="Stage").click()
    page.get_by_role("link", name="Transition to Production").click()
    dialog = page.get_by_role("dialog", name="Transition version 3 to Production")
    expect(dialog).to_contain_text("version 2 (now Production) is archived")
    dialog.get_by_label("Justification (required)").fill("cheaper to serve")
    dialog.get_by_role("button", name="Submit promotion request").click()
    expect(page.locator("#promotion-status")).to_contain_text("checks failed", timeout=PROMOTION_TIMEOUT_MS)
    failed = page.locator("li.check-fail")
    expect(failed).to_have_count(1)
    expect(failed).to_contain_text("metrics")
    expect(failed.get_by_role("row", name=re.compile("auc"))).to_contain_text("0.8")
    expect(page.get_by_role("button", name="Re-check")).to_be_visible()
    expect(page.get_by_role("button", name="Cancel promotion")).to_be_visible()
    shot(page, screenshots, "13-promotion-checks-failed")

    approver_context = new_context(browser, server)
    desk = sign_in(approver_context, team.approver)
    desk.goto(page.url)
    expect(desk.get_by_role("button", name="Sign off")).to_have_count(0)  # nothing to sign off while checks fail
    desk.get_by_role("button", name="Reject").click()  # the reason is required: the browser does not submit
    assert desk.get_by_label("Reason for rejecting (required)").evaluate("el => el.validity.valueMissing") is True
    assert desk.locator(".flash").count() == 0
    desk.get_by_label("Reason for rejecting (required)").fill("auc is below the current Production version")
    desk.get_by_role("button", name="Reject").click()
    expect(desk.get_by_role("status").first).to_contain_text("Rejected")
    expect(desk.locator("#promotion-status")).to_contain_text("rejected", timeout=PROMOTION_TIMEOUT_MS)
    expect(page.locator("#promotion-status")).to_contain_text("rejected", timeout=PROMOTION_TIMEOUT_MS)
    engineer_context.close()
    approver_context.close()


def test_a_viewer_sees_no_write_buttons_and_a_forged_post_is_refused(
    browser: Browser, server: LiveServer, team: Team, screenshots: Path
) -> None:
    context = new_context(browser, server)
    page = sign_in(context, team.viewer)
    page.goto(f"/ui/models/{MODEL}/versions/2")
    expect(page.locator("h1")).to_contain_text("version 2")
    expect(page.locator("#stage-menu")).to_have_count(0)
    for name in ("Delete version", "Save description", "Save tag", "Point at v2"):
        expect(page.get_by_role("button", name=name)).to_have_count(0)
    expect(page.get_by_role("link", name="Delete version")).to_have_count(0)
    expect(page.locator("main form[method=post]")).to_have_count(0)
    page.goto(f"/ui/models/{MODEL}")
    for name in ("Register a new version", "Delete model", "Roll back Production"):
        expect(page.get_by_role("link", name=name)).to_have_count(0)
    expect(page.get_by_role("link", name="Register a model")).to_have_count(0)

    # A forged form post (no CSRF token) is refused, and so is a viewer's well-formed one.
    forged = context.request.post(f"/ui/models/{MODEL}/versions/2/stage", form={"stage": "Archived"},
                                  max_redirects=0)
    assert forged.status == 403 and "security token" in forged.text()
    page.goto(f"/ui/models/{MODEL}/versions/2/stage?target=Archived")  # the no-JS confirmation page
    page.evaluate("""() => { const f = document.createElement('form'); f.method = 'post';
        f.action = location.pathname; const i = document.createElement('input'); i.name = 'stage';
        i.value = 'Archived'; f.append(i); const c = document.querySelector('input[name=csrf_token]').cloneNode();
        f.append(c); document.body.append(f); f.submit(); }""")
    expect(page.get_by_role("heading", name="Not allowed")).to_be_visible()
    expect(page.locator(".role-needed")).to_contain_text("engineer")
    shot(page, screenshots, "11-forbidden")
    response = page.goto(f"/ui/models/{MODEL}/versions/99")
    assert response is not None and response.status == 404
    expect(page.get_by_role("heading", name="Not found")).to_be_visible()
    shot(page, screenshots, "12-not-found")
    context.close()
