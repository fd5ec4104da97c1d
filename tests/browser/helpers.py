"""Helpers of the browser tests: Debian's chromium, the people of the story, model folders, signing in."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from pathlib import Path

from playwright.sync_api import Browser, BrowserContext, Page

from tests.fixtures.servers import LiveServer

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run", "--disable-sync",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "build" / "screenshots"
FEATURES = ("tenure_months", "monthly_charges", "contract_months", "support_calls")
IMPORTANCES = {"tenure_months": 0.34, "monthly_charges": 0.28, "contract_months": 0.22, "support_calls": 0.16}


@dataclass(frozen=True)
class Person:
    """A user of the story and their token."""

    name: str
    token: str


@dataclass(frozen=True)
class Team:
    admin: Person
    engineer: Person
    approver: Person
    viewer: Person


def churn_artifact(root: Path, *, auc: float, log_loss: float) -> Path:
    """A small MLflow model folder with a signature, a metrics snapshot and feature importances."""
    path = root / f"churn-run-{secrets.token_hex(4)}" / "model"
    path.mkdir(parents=True)
    inputs = json.dumps([{"type": "double", "name": name, "required": True} for name in FEATURES])
    (path / "MLmodel").write_text(
        "artifact_path: model\nflavors:\n  python_function:\n    loader_module: mlflow.sklearn\n"
        f"signature:\n  inputs: '{inputs}'\n  outputs: '[{{\"type\": \"long\"}}]'\n"
    )
    (path / "model.pkl").write_bytes(secrets.token_bytes(256))
    (path / "metrics.json").write_text(json.dumps({"auc": auc, "log_loss": log_loss}))
    (path / "feature_importances.json").write_text(json.dumps(IMPORTANCES))
    return path


def new_context(browser: Browser, server: LiveServer) -> BrowserContext:
    """A fresh browser profile (no cookies) with a fixed viewport and time zone."""
    context = browser.new_context(base_url=server.url, viewport={"width": 1360, "height": 900},
                                  timezone_id="Europe/Berlin", locale="en-GB")
    context.set_default_timeout(20_000)
    return context


def sign_in(context: BrowserContext, person: Person) -> Page:
    """Sign in through the sign-in page and return the page (on the models list)."""
    page = context.new_page()
    page.goto("/ui/sign-in")
    page.get_by_label("API token").fill(person.token)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/ui/models")
    return page
