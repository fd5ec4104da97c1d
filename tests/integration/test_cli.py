"""The ``calabi`` CLI as a client of a live server on another port: only ``--url`` and a token.

The CLI runs in-process (``CliRunner``) with no CALABI_* setting but the ones a test names, and
a private config dir for saved tokens; the server runs in its own process with its own data dir.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import sqlite3
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

import calabi.cli.main as cli
from policies.loading import default_policy_text
from registry_store.artifacts import tree_digest
from tests.fixtures.servers import LiveServer, free_port, make_artifact, start_server, stop_server

HIGH_TIER = '\n[tiers.high.production.sign_off]\nexpires_after = "2d"\n'
SERVER_SETTINGS = ("CALABI_DATA_DIR", "CALABI_DATABASE_URL", "CALABI_ARTIFACT_ROOT", "CALABI_LOCAL_SOURCE_ROOTS",
                   "CALABI_ADMIN_TOKEN", "CALABI_TEMPORAL_ADDRESS")


@dataclass
class Calabi:
    """``calabi --url <server> --token <token> …`` on this machine's files."""

    server: LiveServer
    local: Path  # the user's own files (not below the server's source roots)
    runner: CliRunner

    @property
    def admin_token(self) -> str:
        return self.server.admin_token

    def run(self, *args: str, token: str | None = None, input: str | None = None,
            env: dict[str, str] | None = None) -> Result:
        """``calabi --url <url> --token <token> <args>`` (the admin's token unless another is given)."""
        for setting in SERVER_SETTINGS:
            assert setting not in os.environ, f"{setting} is set for the CLI"
        return self.runner.invoke(cli.app, ["--url", self.server.url, "--token", token or self.admin_token, *args],
                                  input=input, env=env)

    def ok(self, *args: str, token: str | None = None, input: str | None = None) -> Result:
        result = self.run(*args, token=token, input=input)
        assert result.exit_code == 0, f"calabi {' '.join(args)}: {result.output}"
        return result

    def json(self, *args: str, token: str | None = None) -> Any:
        return json.loads(self.ok(*args, "--json", token=token).stdout)

    def artifact(self) -> Path:
        """A model directory on the user's machine."""
        return make_artifact(self.local, payload=b"\x80\x04tiny-pickle")


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def assert_error(result: Result, code: str, *, exit_code: int = 1) -> str:
    """Exit ``exit_code`` with exactly one stderr line ``error: CODE: …`` and no traceback."""
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == exit_code, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: {code}: "), lines[0]
    assert "Traceback" not in result.output
    return lines[0]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    policies = tmp_path_factory.mktemp("cli-policies")
    (policies / "default.toml").write_text(default_policy_text() + HIGH_TIER)  # declares the risk tier "high"
    started = start_server(tmp_path_factory.mktemp("cli-server"), extra_env={"CALABI_POLICY_DIR": str(policies)})
    yield started
    stop_server(started)


@pytest.fixture
def calabi(server: LiveServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Calabi:
    for key in list(os.environ):
        if key.startswith("CALABI_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("COLUMNS", "200")  # rich tables: one line per row
    monkeypatch.chdir(tmp_path)
    local = tmp_path / "laptop"
    local.mkdir()
    return Calabi(server=server, local=local, runner=CliRunner())


def test_registry_story(calabi: Calabi) -> None:
    churn = unique("churn")
    created = calabi.json("models", "create", churn, "--description", "Churn model", "--tag", "team=ml")
    assert (created["name"], created["description"], created["tags"]) == (churn, "Churn model", {"team": "ml"})

    artifact = calabi.artifact()
    v1 = calabi.json("versions", "register", churn, str(artifact), "--run-id", "run-1", "--tag", "dataset=2024-05",
                     "--description", "first")
    assert (v1["version"], v1["run_id"], v1["tags"]) == (1, "run-1", {"dataset": "2024-05"})
    assert v1["current_stage"] == "None"
    assert v1["digest"] == tree_digest(artifact) and v1["source"] == f"upload:{artifact.name}"
    assert v1["storage_location"] != v1["source"]
    human = calabi.ok("versions", "register", churn, str(calabi.artifact()))
    assert f"'{churn}' version 2" in human.stdout

    assert [m["name"] for m in calabi.json("models", "list", "--filter", f"name = '{churn}'")] == [churn]
    assert churn in calabi.ok("models", "list").stdout
    assert [m["name"] for m in calabi.json("models", "list", "--filter", "name = 'nothing'")] == []
    assert [v["version"] for v in calabi.json("versions", "list", churn)] == [2, 1]
    assert "Staging" not in calabi.ok("versions", "list", churn).stdout

    assert calabi.json("versions", "transition", churn, "1", "staging")["current_stage"] == "Staging"
    assert calabi.json("versions", "transition", churn, "1", "Production")["current_stage"] == "Production"
    assert "now in Archived" in calabi.ok("versions", "transition", churn, "2", "Archived").stdout

    calabi.ok("aliases", "set", churn, "challenger", "2")
    aliased = calabi.json("aliases", "show", churn, "challenger")
    assert (aliased["version"], aliased["aliases"]) == (2, ["challenger"])
    assert "challenger" in calabi.ok("versions", "show", churn, "2").stdout

    calabi.ok("tags", "set", churn, "owner", "alice")
    calabi.ok("tags", "set", churn, "validated", "yes", "--version", "2")
    assert calabi.json("models", "show", churn)["tags"] == {"team": "ml", "owner": "alice"}
    assert calabi.json("versions", "show", churn, "2")["tags"] == {"validated": "yes"}
    calabi.ok("tags", "delete", churn, "team")
    calabi.ok("tags", "delete", churn, "validated", "--version", "2")
    assert calabi.json("models", "show", churn)["tags"] == {"owner": "alice"}
    assert calabi.json("versions", "show", churn, "2")["tags"] == {}

    assert calabi.json("models", "describe", churn, "Predicts churn")["description"] == "Predicts churn"
    assert calabi.json("versions", "describe", churn, "1", "baseline")["description"] == "baseline"
    shown = calabi.json("models", "show", churn)
    assert shown["description"] == "Predicts churn"
    assert {(a["alias"], a["version"]) for a in shown["aliases"]} == {("challenger", 2)}
    assert "Predicts churn" in calabi.ok("models", "show", churn).stdout

    assert "Risk tier of" in calabi.ok("models", "set-tier", churn, "high").stdout
    assert re.search(r"Risk tier\s+│?\s*high", calabi.ok("models", "show", churn).stdout)
    assert calabi.json("models", "set-tier", churn, "--clear")["risk_tier"] is None
    assert calabi.json("models", "show", churn)["risk_tier"] is None

    events = calabi.json("audit", "list", "--model", churn, "--limit", "1000")
    actions = [e["action"] for e in events]
    assert actions[:3] == ["create_registered_model", "create_model_version", "create_model_version"]
    assert {
        "transition_stage", "set_alias", "set_registered_model_tag", "set_model_version_tag",
        "delete_registered_model_tag", "delete_model_version_tag", "update_registered_model", "update_model_version",
    } <= set(actions)
    assert {e["actor"] for e in events} == {"admin"}
    assert [e["action"] for e in calabi.json("audit", "list", "--model", churn, "--limit", "3")] == actions[:3]
    assert "create_model_version" in calabi.ok("audit", "list", "--newest").stdout
    everything = calabi.json("audit", "list", "--limit", "1000")
    assert calabi.ok("audit", "verify").stdout.strip() == f"audit chain intact: {len(everything)} events"
    assert calabi.json("audit", "verify") == {
        "ok": True, "events_checked": len(everything), "first_bad_seq": None, "problem": "",
    }

    eve_name, frank_name = unique("eve"), unique("frank")
    added = calabi.json("users", "add", eve_name, "--role", "engineer", "--role", "viewer")
    assert added["user"]["name"] == eve_name and added["user"]["roles"] == ["engineer", "viewer"]
    eve = added["token"]
    users = {u["name"]: u["roles"] for u in calabi.json("users", "list")}
    assert users["admin"] == ["admin"] and users[eve_name] == ["engineer", "viewer"]
    assert eve_name in calabi.ok("users", "list").stdout
    assert "Token (shown once" in calabi.ok("users", "add", frank_name, "--role", "viewer").stdout

    eve_model, eve_renamed = unique("eve-model"), unique("eve-renamed")
    calabi.ok("models", "create", eve_model, token=eve)
    assert calabi.json("models", "rename", eve_model, eve_renamed, token=eve)["name"] == eve_renamed
    renamed_events = calabi.json("audit", "list", "--model", eve_renamed)
    assert [(e["actor"], e["action"]) for e in renamed_events] == [(eve_name, "rename_registered_model")]
    created_by = calabi.json("audit", "list", "--model", eve_model)
    assert [(e["actor"], e["action"]) for e in created_by] == [(eve_name, "create_registered_model")]

    calabi.ok("aliases", "delete", churn, "challenger")
    assert_error(calabi.run("aliases", "show", churn, "challenger"), "INVALID_PARAMETER_VALUE")
    assert f"Deleted '{churn}' version 2" in calabi.ok("versions", "delete", churn, "2", "--yes").stdout
    assert [v["version"] for v in calabi.json("versions", "list", churn)] == [1]
    calabi.ok("models", "delete", churn, input="y\n")
    assert_error(calabi.run("models", "show", churn), "RESOURCE_DOES_NOT_EXIST")
    assert calabi.ok("audit", "verify").stdout.startswith("audit chain intact: ")


@pytest.fixture
def churn(calabi: Calabi) -> tuple[Calabi, str]:
    """``calabi`` with a new model holding version 1."""
    name = unique("churn")
    calabi.ok("models", "create", name)
    calabi.ok("versions", "register", name, str(calabi.artifact()))
    return calabi, name


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (["models", "show", "nope"], "RESOURCE_DOES_NOT_EXIST", "name=nope"),
        (["versions", "list", "nope"], "RESOURCE_DOES_NOT_EXIST", "name=nope"),
        (["versions", "show", "{m}", "7"], "RESOURCE_DOES_NOT_EXIST", "version=7"),
        (["versions", "transition", "{m}", "1", "Limbo"], "INVALID_PARAMETER_VALUE", "Limbo"),
        (["versions", "show", "{m}", "abc"], "INVALID_PARAMETER_VALUE", "'abc'"),
        (["versions", "transition", "{m}", "abc", "Staging"], "INVALID_PARAMETER_VALUE", "'abc'"),
        (["models", "create", "{m}"], "RESOURCE_ALREADY_EXISTS", "churn"),
        (["models", "create", "a/b"], "INVALID_PARAMETER_VALUE", "a/b"),
        (["versions", "register", "{m}", "relative/path"], "INVALID_PARAMETER_VALUE", "no such file"),
        (["versions", "register", "{m}", "file:///etc"], "INVALID_PARAMETER_VALUE", "refused"),
        (["versions", "register", "{m}", "ftp://host/model"], "INVALID_PARAMETER_VALUE", "ftp"),
        (["aliases", "set", "{m}", "latest", "1"], "INVALID_PARAMETER_VALUE", "reserved"),
        (["users", "add", "bob", "--role", "wizard"], "INVALID_PARAMETER_VALUE", "wizard"),
        (["users", "add", "bob"], "INVALID_PARAMETER_VALUE", "roles"),
        (["audit", "list", "--limit", "0"], "INVALID_PARAMETER_VALUE", "limit"),
        (["models", "set-tier", "{m}", "medium"], "INVALID_PARAMETER_VALUE", "the policy declares: high"),
    ],
)
def test_bad_input_is_one_error_line(churn: tuple[Calabi, str], args: list[str], code: str, fragment: str) -> None:
    calabi, name = churn
    args = [arg.replace("{m}", name) for arg in args]
    line = assert_error(calabi.run(*args), code)
    assert fragment in line
    assert calabi.run(*args).stdout == ""


def test_engineer_cannot_move_a_version_into_production(churn: tuple[Calabi, str]) -> None:
    calabi, name = churn
    eve = unique("eve")
    token = calabi.json("users", "add", eve, "--role", "engineer")["token"]
    line = assert_error(calabi.run("versions", "transition", name, "1", "Production", token=token),
                        "PERMISSION_DENIED")
    assert f"'{eve}'" in line and "'admin' role is required" in line
    assert calabi.json("versions", "show", name, "1", token=token)["current_stage"] == "None"
    assert calabi.json("versions", "transition", name, "1", "Staging", token=token)["current_stage"] == "Staging"
    viewer = calabi.json("users", "add", unique("val"), "--role", "viewer")["token"]
    assert_error(calabi.run("models", "create", unique("other"), token=viewer), "PERMISSION_DENIED")
    assert_error(calabi.run("versions", "register", name, str(calabi.artifact()), token=viewer), "PERMISSION_DENIED")
    assert_error(calabi.run("users", "list", token=token), "PERMISSION_DENIED")


def test_audit_verify_detects_an_edited_event(tmp_path: Path, calabi: Calabi) -> None:
    own = start_server(tmp_path / "tampered")
    try:
        mine = Calabi(server=own, local=calabi.local, runner=calabi.runner)
        mine.ok("models", "create", "churn")
        mine.ok("versions", "register", "churn", str(mine.artifact()))
        assert mine.ok("audit", "verify").stdout.strip() == "audit chain intact: 3 events"
        with sqlite3.connect(own.data_dir / "calabi.db") as db:  # an attacker with full rights on the file
            db.execute("DROP TRIGGER audit_events_no_update")
            assert db.execute("UPDATE audit_events SET actor = 'mallory' WHERE seq = 2").rowcount == 1
        line = assert_error(mine.run("audit", "verify"), "AUDIT_CHAIN_BROKEN")
        assert "seq=2" in line and "edited" in line
        result = mine.run("audit", "verify", "--json")
        assert result.exit_code == 1
        assert json.loads(result.stdout)["first_bad_seq"] == 2
    finally:
        stop_server(own)


def test_token_from_option_environment_and_login(calabi: Calabi, monkeypatch: pytest.MonkeyPatch) -> None:
    url = calabi.server.url
    result = calabi.runner.invoke(cli.app, ["--url", url, "models", "list"])
    assert "calabi login" in assert_error(result, "UNAUTHENTICATED")
    assert_error(calabi.run("models", "list", token="not-a-token"), "UNAUTHENTICATED")

    carol_name, dave_name = unique("carol"), unique("dave")
    carol = calabi.json("users", "add", carol_name, "--role", "engineer")["token"]
    dave = calabi.json("users", "add", dave_name, "--role", "engineer")["token"]
    wrong = calabi.runner.invoke(cli.app, ["login", url + "/", "--token", "not-a-token"])
    assert_error(wrong, "UNAUTHENTICATED")
    config = Path(os.environ["XDG_CONFIG_HOME"]) / "calabi" / "credentials"
    assert not config.exists()  # a token the server refuses is not saved

    logged_in = calabi.runner.invoke(cli.app, ["login", url + "/"], input=f"{carol}\n")
    assert logged_in.exit_code == 0, logged_in.output
    assert f"as '{carol_name}'" in logged_in.stdout and carol not in logged_in.output  # the prompt hides it
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert json.loads(config.read_text()) == {url: carol}

    from_login, from_env, from_option = unique("from-login"), unique("from-env"), unique("from-option")
    monkeypatch.setenv("CALABI_URL", url)
    assert calabi.runner.invoke(cli.app, ["models", "create", from_login]).exit_code == 0
    monkeypatch.setenv("CALABI_TOKEN", dave)
    assert calabi.runner.invoke(cli.app, ["models", "create", from_env]).exit_code == 0
    with_option = calabi.runner.invoke(cli.app, ["--token", calabi.admin_token, "models", "create", from_option])
    assert with_option.exit_code == 0
    actors = {e["model_name"]: e["actor"] for e in calabi.json("audit", "list", "--newest", "--limit", "20")}
    assert (actors[from_login], actors[from_env], actors[from_option]) == (carol_name, dave_name, "admin")


def test_unreachable_or_wrong_server_is_one_line(calabi: Calabi, monkeypatch: pytest.MonkeyPatch) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    result = calabi.runner.invoke(cli.app, ["--url", nowhere, "--token", "x", "models", "list"])
    line = assert_error(result, "TEMPORARILY_UNAVAILABLE")
    assert nowhere in line and "no registry database" not in line
    monkeypatch.setenv("CALABI_URL", nowhere)
    assert nowhere in assert_error(calabi.runner.invoke(cli.app, ["--token", "x", "audit", "verify"]),
                                   "TEMPORARILY_UNAVAILABLE")
    assert "http://" in assert_error(calabi.runner.invoke(cli.app, ["--url", "calabi.example", "--token", "x",
                                                                    "models", "list"]), "INVALID_PARAMETER_VALUE")
    not_calabi = calabi.runner.invoke(cli.app, ["--url", f"{calabi.server.url}/nowhere", "--token", "x",
                                                "models", "list"])
    assert_error(not_calabi, "ENDPOINT_NOT_FOUND")


def test_upload_json_stays_clean_with_the_progress_bar(calabi: Calabi) -> None:
    name = unique("big")
    calabi.ok("models", "create", name)
    artifact = calabi.artifact()
    (artifact / "weights").mkdir()
    (artifact / "weights" / "layer.bin").write_bytes(secrets.token_bytes(3 * 1024 * 1024 + 7))
    result = calabi.run("versions", "register", name, str(artifact), "--json", env={"TTY_COMPATIBLE": "1"})
    assert result.exit_code == 0, result.output
    assert "Uploading" in result.stderr  # the bar was drawn, on stderr
    version = json.loads(result.stdout)
    assert version["digest"] == tree_digest(artifact) and version["version"] == 1

    single = calabi.json("versions", "register", name, str(artifact / "model.pkl"))
    assert single["digest"] == tree_digest(artifact / "model.pkl") and single["source"] == "upload:model.pkl"
    (artifact / "link").symlink_to(artifact / "model.pkl")
    assert "symlink" in assert_error(calabi.run("versions", "register", name, str(artifact)), "INVALID_PARAMETER_VALUE")
    assert [v["version"] for v in calabi.json("versions", "list", name)] == [2, 1]


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["models", "create"], "Missing argument"),
        (["models", "create", "m", "--tag", "no-equals-sign"], "KEY=VALUE"),
        (["models", "list", "--max-results", "many"], "--max-results"),
        (["versions", "register", "m", "/x", "--tag", "k"], "KEY=VALUE"),
        (["models", "frobnicate"], "frobnicate"),
        (["--bogus", "models", "list"], "--bogus"),
        (["models", "set-tier", "m"], "TIER or --clear"),
        (["models", "set-tier", "m", "high", "--clear"], "TIER or --clear"),
    ],
)
def test_usage_errors_are_one_line(calabi: Calabi, args: list[str], fragment: str) -> None:
    result = calabi.runner.invoke(cli.app, args)
    line = assert_error(result, "USAGE", exit_code=2)
    assert fragment in line


def test_declined_delete_changes_nothing(churn: tuple[Calabi, str]) -> None:
    calabi, name = churn
    result = calabi.run("models", "delete", name, input="n\n")
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Delete registered model '{name}' with all its versions and artifacts?")
    assert result.stderr.endswith("error: ABORTED: nothing was changed\n")
    assert calabi.run("versions", "delete", name, "1", input="n\n").exit_code == 1
    assert [v["version"] for v in calabi.json("versions", "list", name)] == [1]
    assert_error(calabi.run("versions", "delete", name, "9", "--yes"), "RESOURCE_DOES_NOT_EXIST")


def test_help_lists_every_command_group(calabi: Calabi) -> None:
    result = calabi.runner.invoke(cli.app, ["--help"])
    assert result.exit_code == 0
    for group in ("models", "versions", "aliases", "tags", "audit", "users", "tokens", "login", "promote", "serve"):
        assert group in result.stdout


def test_archive_existing_moves_the_other_staging_versions(churn: tuple[Calabi, str]) -> None:
    calabi, name = churn
    calabi.ok("versions", "register", name, str(calabi.artifact()))
    calabi.ok("versions", "transition", name, "1", "Staging")
    moved = calabi.json("versions", "transition", name, "2", "Staging", "--archive-existing")
    assert moved["current_stage"] == "Staging"
    stages = {v["version"]: v["current_stage"] for v in calabi.json("versions", "list", name)}
    assert stages == {1: "Archived", 2: "Staging"}


def test_history_shows_who_was_production_when(churn: tuple[Calabi, str]) -> None:
    calabi, name = churn
    calabi.ok("versions", "register", name, str(calabi.artifact()))
    assert calabi.json("models", "history", name)["stints"] == []
    first = calabi.json("versions", "transition", name, "1", "Production")  # the admin breaks glass
    second = calabi.json("versions", "transition", name, "2", "Production")

    stints = calabi.json("models", "history", name)["stints"]
    assert [(s["version"], s["since"], s["until"], s["break_glass"]) for s in stints] == [
        (2, second["last_updated_timestamp"], None, True),
        (1, first["last_updated_timestamp"], second["last_updated_timestamp"], True),
    ]
    table = calabi.ok("models", "history", name).stdout
    assert f"Production history of {name}" in table and "(break-glass)" in table
    at_first = calabi.json("models", "history", name, "--at", str(first["last_updated_timestamp"]))
    assert (at_first["version"], at_first["stint"]["version"]) == (1, 1)
    before = calabi.ok("models", "history", name, "--at", str(first["last_updated_timestamp"] - 1)).stdout
    assert before.startswith(f"No version of '{name}' was in Production at ")
    assert "'yesterday'" in assert_error(calabi.run("models", "history", name, "--at", "yesterday"),
                                         "INVALID_PARAMETER_VALUE")


def test_tokens_create_list_revoke_through_the_api(calabi: Calabi) -> None:
    name = unique("erin")
    erin = calabi.json("users", "add", name, "--role", "viewer")["token"]
    created = calabi.json("tokens", "create", "ci job", "--days", "7", token=erin)
    secret, token = created["secret"], created["token"]
    assert token["name"] == "ci job" and token["expires_at"] - token["creation_timestamp"] == 7 * 24 * 3600 * 1000
    shown = calabi.ok("tokens", "create", "laptop", token=secret).stdout
    assert "Token (shown once, store it now): " in shown and "laptop" in shown
    assert [t["name"] for t in calabi.json("tokens", "list", token=secret)] == ["laptop", "ci job", "(unnamed)"]
    assert "ci job" in calabi.ok("tokens", "list", token=erin).stdout
    assert_error(calabi.run("tokens", "create", "x", "--days", "400", token=erin), "INVALID_PARAMETER_VALUE")
    assert_error(calabi.run("tokens", "revoke", str(token["id"])), "RESOURCE_DOES_NOT_EXIST")  # not the admin's
    assert f"Revoked token 'ci job' (id {token['id']})" in calabi.ok("tokens", "revoke", str(token["id"]),
                                                                    token=erin).stdout
    assert "revoked" in assert_error(calabi.run("tokens", "list", token=secret), "UNAUTHENTICATED")
    assert calabi.json("tokens", "list", token=erin)[1]["revoked_at"] is not None


def test_groups_primary_groups_grants_and_restriction(calabi: Calabi) -> None:
    team, other, user = unique("team"), unique("other"), unique("ana")
    token = calabi.server.create_user(user, "engineer")
    assert "Created group" in calabi.ok("groups", "create", team, "--description", "churn team").stdout
    calabi.ok("groups", "create", other)
    assert calabi.json("groups", "add-member", other, user)["members"] == [user]
    calabi.ok("users", "set-primary-group", user, team)
    assert calabi.json("groups", "show", team)["members"] == [user]
    assert {u["name"]: u["primary_group"] for u in calabi.json("users", "list")}[user] == team
    assert team in calabi.ok("groups", "list").stdout

    model = unique("owned")
    assert calabi.json("models", "create", model, token=token)["owner_group"] == team
    shown_model = calabi.ok("models", "show", model, token=token).stdout
    assert "Owner" in shown_model and team in shown_model
    calabi.ok("models", "grant", model, "read", "--group", other, token=token)
    calabi.ok("models", "grant", model, "EDIT", "--user", user, token=token)
    shown = calabi.json("models", "grants", model, token=token)
    assert (shown["owner_group"], shown["restricted"]) == (team, False)
    assert {(g["principal_kind"], g["principal"], g["permission"]) for g in shown["grants"]} == {
        ("group", other, "READ"), ("user", user, "EDIT")}
    assert calabi.json("models", "restrict", model, token=token)["restricted"] is True
    assert calabi.json("models", "revoke", model, "--user", user, token=token)["grants"] == [
        {"principal_kind": "group", "principal": other, "permission": "READ"}]
    assert calabi.json("models", "set-owner", model, other, token=token)["owner_group"] == other
    assert calabi.json("models", "unrestrict", model)["restricted"] is False

    unowned = calabi.json("models", "create", unique("unowned"))["name"]  # the admin has no primary group
    assert "set one first" in assert_error(calabi.run("models", "restrict", unowned), "INVALID_PARAMETER_VALUE")
    assert_error(calabi.run("groups", "show", unique("ghost")), "RESOURCE_DOES_NOT_EXIST")
    assert_error(calabi.run("groups", "create", team, token=token), "PERMISSION_DENIED")
    calabi.ok("groups", "remove-member", other, user)
    calabi.ok("groups", "delete", team, "--yes")
    assert calabi.json("models", "grants", model)["grants"] == [
        {"principal_kind": "group", "principal": other, "permission": "READ"}]
