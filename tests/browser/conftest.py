"""Browser tests: Playwright drives Debian's chromium (never a downloaded browser) against a live server.

One ``calabi serve`` with the embedded Temporal dev server and worker for the module; one
headless chromium; each user gets their own browser context (their own session cookie).
Screenshots of the main pages go to ``build/screenshots/`` at the repository root.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Playwright, sync_playwright

from tests.browser.helpers import CHROMIUM, CHROMIUM_ARGS, SCREENSHOTS, Person, Team
from tests.fixtures.servers import LiveServer, start_server, stop_server
from tests.fixtures.tracking import TrackingServer


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tracking_server: TrackingServer) -> Iterator[LiveServer]:
    started = start_server(tmp_path_factory.mktemp("browser"), temporal=True, tracking_url=tracking_server.url)
    yield started
    stop_server(started)


@pytest.fixture(scope="module")
def team(server: LiveServer) -> Team:
    suffix = secrets.token_hex(3)

    def person(name: str, *roles: str) -> Person:
        return Person(f"{name}-{suffix}", server.create_user(f"{name}-{suffix}", *roles))

    return Team(admin=Person("admin", server.admin_token), engineer=person("alice", "engineer"),
                approver=person("bob", "approver"), viewer=person("carol", "viewer"))


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
    yield launched
    launched.close()


@pytest.fixture(scope="module")
def screenshots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS
