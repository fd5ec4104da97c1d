"""The seed's "From the UI" registration: Experiments → the run → Artifacts panel → Register Model → Register.

The run and its MLflow 3 logged model are logged into the session's real tracking server by the
real ``mlflow`` client; Calabi's pages read them through the tracking gateway's client.
"""

from __future__ import annotations

import re
import secrets
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.browser.helpers import CHROMIUM, Team, new_context, sign_in
from tests.fixtures.servers import LiveServer
from tests.fixtures.tracking import TrackingServer
from tests.integration.test_experiment_pages import LoggedRun, log_model_run

assert CHROMIUM.exists(), f"{CHROMIUM} missing: apt-get install chromium"

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")


@pytest.fixture(scope="module")
def logged(tracking_server: TrackingServer, tmp_path_factory: pytest.TempPathFactory) -> LoggedRun:
    """A run with an sklearn logged model, metrics and params (no MLflow 2 folders)."""
    return log_model_run(tracking_server.url, tmp_path_factory.mktemp("browser-run"), legacy_folder=False)


def shot(page: Page, folder: Path, name: str) -> None:
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


def test_engineer_registers_the_runs_logged_model(
    browser: Browser, server: LiveServer, team: Team, logged: LoggedRun, screenshots: Path
) -> None:
    model_name = f"churn-predictor-{secrets.token_hex(3)}"
    page = sign_in(new_context(browser, server), team.engineer)

    page.get_by_role("navigation", name="Main").get_by_role("link", name="Experiments").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Experiments")
    experiment_link = page.get_by_role("link", name=logged.experiment_name, exact=True)
    expect(experiment_link).to_be_visible()
    shot(page, screenshots, "14-experiments")

    experiment_link.click()
    run_row = page.get_by_role("row").filter(has=page.get_by_role("link", name=logged.run_name))
    expect(run_row).to_contain_text("Finished")
    expect(run_row).to_contain_text("0.87")
    shot(page, screenshots, "15-experiment")
    run_row.get_by_role("link", name=logged.run_name).click()

    expect(page).to_have_url(re.compile(f"/ui/runs/{logged.run_id}$"))
    panel = page.get_by_role("region", name="Artifacts")
    folder_row = panel.get_by_role("row").filter(has_text=logged.model_id)
    expect(folder_row).to_contain_text("holdout_log_loss")
    expect(page.get_by_role("table", name="Parameters of the run")).to_contain_text("n_estimators")
    shot(page, screenshots, "16-run")

    folder_row.get_by_role("link", name="Register Model").click()
    expect(page).to_have_url(re.compile(r"/ui/register\?"))
    expect(page.get_by_label("Model artifact folder")).to_have_value(f"models:/{logged.model_id}")
    expect(page.get_by_label("Run ID (optional)")).to_have_value(logged.run_id)
    page.get_by_label("Model", exact=True).fill(model_name)
    shot(page, screenshots, "17-register-from-run")
    page.get_by_role("button", name="Register").click()

    expect(page).to_have_url(re.compile(f"/ui/models/{model_name}/versions/1$"), timeout=60_000)
    expect(page.get_by_role("status")).to_contain_text(f"Created model {model_name} and registered version 1")
    details = page.get_by_role("region", name="Details")
    expect(details).to_contain_text(logged.run_id)
    expect(details).to_contain_text(f"models:/{logged.model_id}")
    expect(details).to_contain_text(logged.model_id)  # the logged model, also outside the source
    # The version snapshots its run: metrics and params from the tracking server.
    expect(page.get_by_role("table", name="Metrics recorded with the artifact or its run")).to_contain_text(
        "holdout_log_loss"
    )
    expect(page.get_by_role("table", name="Parameters of the run that produced the model")).to_contain_text(
        "n_estimators"
    )
    details.get_by_role("link", name="run page").click()
    expect(page).to_have_url(re.compile(f"/ui/runs/{logged.run_id}$"))
