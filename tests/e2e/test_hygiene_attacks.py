"""Issue 11's hygiene attacks, performed against a live ``calabi serve``: each test fails if the attack works.

The server's data dir lies inside its source root, and its tracking URL carries credentials.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.helpers import API, assert_error, call, create_model, ok, random_name
from tests.fixtures.servers import LiveServer, free_port, make_artifact, start_server, stop_server
from tests.fixtures.trees import deep_tree, flatten
from tests.integration.page_session import sign_in_form

TRACKING_SECRET = "tr4cking-pa55word"
DEEP = 1_100


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server whose source root holds its data dir, with a tracking URL carrying credentials (nothing listens)."""
    tmp = tmp_path_factory.mktemp("hygiene")
    started = start_server(
        tmp, tracking_url=f"http://calabi-bot:{TRACKING_SECRET}@127.0.0.1:{free_port()}",
        extra_env={"CALABI_LOCAL_SOURCE_ROOTS": str(tmp)},
    )
    yield started
    stop_server(started)


def database(server: LiveServer) -> sqlite3.Connection:
    return sqlite3.connect(server.data_dir / "calabi.db")


def register(server: LiveServer, source: Path) -> httpx.Response:
    with server.client() as http:
        name = create_model(http)
        return call(http, "POST", "/model-versions/create", {"name": name, "source": str(source)})


@pytest.mark.parametrize("secret", ["calabi.db", "server-key"])
def test_a_symlink_to_a_private_file_does_not_register(server: LiveServer, secret: str) -> None:
    source = make_artifact(server.source_root)
    (source / "stolen").symlink_to(server.data_dir / secret)
    assert_error(register(server, source), 400, "INVALID_PARAMETER_VALUE")


def test_a_hard_link_to_the_database_does_not_register(server: LiveServer) -> None:
    source = make_artifact(server.source_root)
    os.link(server.data_dir / "calabi.db", source / "copy.db")
    assert_error(register(server, source), 400, "INVALID_PARAMETER_VALUE")


def test_the_data_dir_and_its_files_are_private(server: LiveServer) -> None:
    assert stat.S_IMODE(server.data_dir.stat().st_mode) == 0o700
    files = [path for path in server.data_dir.rglob("*") if not path.is_symlink()]
    assert {"calabi.db", "calabi.db-wal", "server-key"} <= {path.name for path in files}
    exposed = {str(path): oct(stat.S_IMODE(path.stat().st_mode)) for path in files if path.stat().st_mode & 0o077}
    assert not exposed


def test_tokens_are_not_stored_as_their_unsalted_sha256(server: LiveServer) -> None:
    token = server.create_user(random_name("salted"), "viewer")
    with database(server) as db:
        stored = {row[0] for row in db.execute("SELECT token_hash FROM tokens")}
    for presented in (token, server.admin_token, token.partition(".")[2]):
        assert hashlib.sha256(presented.encode()).hexdigest() not in stored


def test_a_deleted_token_is_refused_on_the_next_request(server: LiveServer) -> None:
    name = random_name("revoked")
    token = server.create_user(name, "viewer")
    with server.client(token) as http:
        ok(call(http, "GET", "/registered-models/search"))
        with database(server) as db:  # as an admin (or another replica) revoking it
            db.execute("DELETE FROM tokens WHERE user_id = (SELECT id FROM users WHERE name = ?)", (name,))
        assert_error(call(http, "GET", "/registered-models/search"), 401, "UNAUTHENTICATED")
        assert http.get("/api/v1/me").status_code == 401


@pytest.mark.parametrize("look_alike", ["Mallory", "MALLORY", "ｍａｌｌｏｒｙ", "mal\u200blory", "\u2060mallory"])
def test_look_alike_user_names_are_refused(server: LiveServer, look_alike: str) -> None:
    with server.client() as http:
        if http.post("/api/v1/users", json={"name": "mallory", "roles": ["viewer"]}).status_code != 200:
            assert http.get("/api/v1/users").status_code == 200  # created by an earlier parameter
        response = http.post("/api/v1/users", json={"name": look_alike, "roles": ["admin"]})
        assert response.status_code == 400, response.text
        names = [user["name"] for user in http.get("/api/v1/users").json()]
    assert names.count("mallory") == 1 and look_alike not in names


def test_tracking_credentials_never_appear_in_errors(server: LiveServer) -> None:
    with server.client() as http:
        gateway = http.get("/mlflow/api/2.0/mlflow/experiments/search", params={"max_results": 1})
        name = create_model(http)
        resolver = call(http, "POST", "/model-versions/create", {"name": name, "source": "runs:/0123abcd/model"})
    assert_error(gateway, 503, "TEMPORARILY_UNAVAILABLE")
    assert resolver.status_code == 503, resolver.text
    for response in (gateway, resolver):
        assert TRACKING_SECRET not in response.text and "calabi-bot" not in response.text


def test_a_deep_source_tree_is_a_400_not_a_500(server: LiveServer) -> None:
    source = make_artifact(server.source_root)
    deep_tree(source, DEEP)
    try:
        body = assert_error(register(server, source), 400, "INVALID_PARAMETER_VALUE")
        assert "deeper than" in body["message"]
    finally:
        flatten(source, DEEP)


def test_failed_tokens_are_rate_limited_per_address(server_factory: Callable[..., LiveServer]) -> None:
    limited = server_factory()
    statuses = []
    with httpx.Client(base_url=limited.url, timeout=30) as http:
        for attempt in range(40):  # each guess claims another address: no proxy is trusted, so it counts as ours
            guess = {"Authorization": f"Bearer guess-{attempt}", "X-Forwarded-For": f"198.51.100.{attempt}"}
            response = http.get(API + "/registered-models/search", headers=guess)
            statuses.append(response.status_code)
            if response.status_code == 429:
                break
        assert statuses[:-1] == [401] * (len(statuses) - 1) and statuses[-1] == 429, statuses
        assert_error(response, 429, "REQUEST_LIMIT_EXCEEDED")
        assert 1 <= int(response.headers["Retry-After"]) <= 60
        valid = http.get(API + "/registered-models/search", headers={"Authorization": f"Bearer {limited.admin_token}"})
        assert valid.status_code == 429  # a guess that happens to be right is no oracle either
        assert http.get("/api/v1/me", headers={"Authorization": "Bearer another-guess"}).status_code == 429
        form = {"sign_in_token": sign_in_form(http), "token": limited.admin_token, "next": "/ui/models"}
        assert http.post("/ui/sign-in", data=form).status_code == 429  # the web sign-in counts the same


def test_a_truncated_audit_chain_is_caught_with_the_guards_dropped(server_factory: Callable[..., LiveServer]) -> None:
    audited = server_factory()
    with audited.client() as http:
        create_model(http)
        assert http.get("/api/v1/audit/verify").json()["ok"]  # anchors the head
        with database(audited) as db:
            for event in ("update", "delete"):
                db.execute(f"DROP TRIGGER audit_events_no_{event}")
            last = db.execute("SELECT max(seq) FROM audit_events").fetchone()[0]
            db.execute("DELETE FROM audit_events WHERE seq = ?", (last,))
            db.execute("UPDATE audit_head SET seq = seq - 1, hash = (SELECT hash FROM audit_events WHERE seq = ?)",
                       (last - 1,))
        result = http.get("/api/v1/audit/verify").json()
    assert not result["ok"] and result["first_bad_seq"] == last, result
