"""The ``calabi`` CLI against a real SQLite registry in a temporary data dir."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

import calabi.cli.main as cli
from calabi.bootstrap import prepare
from calabi.settings import Settings
from tests.fixtures.servers import free_port, make_artifact


@dataclass
class Registry:
    """A migrated registry in a temp dir, an admin token and an allowed source root."""

    data_dir: Path
    source_root: Path
    admin_token: str
    runner: CliRunner

    def run(self, *args: str, token: str | None = None, input: str | None = None) -> Result:
        """``calabi --token <token> <args>`` (the admin's token unless another is given)."""
        return self.runner.invoke(cli.app, ["--token", token or self.admin_token, *args], input=input)

    def ok(self, *args: str, token: str | None = None, input: str | None = None) -> Result:
        result = self.run(*args, token=token, input=input)
        assert result.exit_code == 0, f"calabi {' '.join(args)}: {result.output}"
        return result

    def json(self, *args: str, token: str | None = None) -> Any:
        return json.loads(self.ok(*args, "--json", token=token).stdout)

    def artifact(self) -> Path:
        return make_artifact(self.source_root, payload=b"\x80\x04tiny-pickle")


def assert_error(result: Result, code: str, *, exit_code: int = 1) -> str:
    """Exit ``exit_code`` with exactly one stderr line ``error: CODE: …`` and no traceback."""
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == exit_code, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: {code}: "), lines[0]
    assert "Traceback" not in result.output
    return lines[0]


ADMIN_TOKEN = secrets.token_urlsafe(16)


def _isolate(monkeypatch: pytest.MonkeyPatch, data_dir: Path, source_root: Path) -> None:
    for key in list(os.environ):
        if key.startswith("CALABI_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("CALABI_DATA_DIR", str(data_dir))
    monkeypatch.setenv("CALABI_ADMIN_TOKEN", ADMIN_TOKEN)
    monkeypatch.setenv("CALABI_LOCAL_SOURCE_ROOTS", str(source_root))
    monkeypatch.setenv("COLUMNS", "200")  # rich tables: one line per row


@pytest.fixture(scope="module")
def migrated_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated to the newest schema, with the admin seeded (copied by each test)."""
    data_dir = tmp_path_factory.mktemp("template")
    with pytest.MonkeyPatch.context() as monkeypatch:
        _isolate(monkeypatch, data_dir, data_dir)
        prepare(Settings())
    return data_dir / "calabi.db"


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, migrated_db: Path) -> Registry:
    data_dir, source_root = tmp_path / "data", tmp_path / "sources"
    data_dir.mkdir()
    source_root.mkdir()
    shutil.copyfile(migrated_db, data_dir / "calabi.db")
    _isolate(monkeypatch, data_dir, source_root)
    return Registry(data_dir=data_dir, source_root=source_root, admin_token=ADMIN_TOKEN, runner=CliRunner())


def test_registry_story(registry: Registry) -> None:
    created = registry.json("models", "create", "churn", "--description", "Churn model", "--tag", "team=ml")
    assert (created["name"], created["description"], created["tags"]) == ("churn", "Churn model", {"team": "ml"})

    v1 = registry.json(
        "versions",
        "register",
        "churn",
        str(registry.artifact()),
        "--run-id",
        "run-1",
        "--tag",
        "dataset=2024-05",
        "--description",
        "first",
    )
    assert (v1["version"], v1["run_id"], v1["tags"], v1["current_stage"]) == (
        1,
        "run-1",
        {"dataset": "2024-05"},
        "None",
    )
    assert v1["digest"] and v1["storage_location"] != v1["source"]
    human = registry.ok("versions", "register", "churn", str(registry.artifact()))
    assert "'churn' version 2" in human.stdout

    assert [m["name"] for m in registry.json("models", "list")] == ["churn"]
    assert "churn" in registry.ok("models", "list").stdout
    assert [m["name"] for m in registry.json("models", "list", "--filter", "name = 'nothing'")] == []
    assert [v["version"] for v in registry.json("versions", "list", "churn")] == [2, 1]
    assert "Staging" not in registry.ok("versions", "list", "churn").stdout

    staged = registry.json("versions", "transition", "churn", "1", "staging")
    assert staged["current_stage"] == "Staging"
    assert registry.json("versions", "transition", "churn", "1", "Production")["current_stage"] == "Production"
    assert "now in Archived" in registry.ok("versions", "transition", "churn", "2", "Archived").stdout

    registry.ok("aliases", "set", "churn", "challenger", "2")
    aliased = registry.json("aliases", "show", "churn", "challenger")
    assert (aliased["version"], aliased["aliases"]) == (2, ["challenger"])
    assert "challenger" in registry.ok("versions", "show", "churn", "2").stdout

    registry.ok("tags", "set", "churn", "owner", "alice")
    registry.ok("tags", "set", "churn", "validated", "yes", "--version", "2")
    assert registry.json("models", "show", "churn")["tags"] == {"team": "ml", "owner": "alice"}
    assert registry.json("versions", "show", "churn", "2")["tags"] == {"validated": "yes"}
    registry.ok("tags", "delete", "churn", "team")
    registry.ok("tags", "delete", "churn", "validated", "--version", "2")
    assert registry.json("models", "show", "churn")["tags"] == {"owner": "alice"}
    assert registry.json("versions", "show", "churn", "2")["tags"] == {}

    assert registry.json("models", "describe", "churn", "Predicts churn")["description"] == "Predicts churn"
    assert registry.json("versions", "describe", "churn", "1", "baseline")["description"] == "baseline"
    shown = registry.json("models", "show", "churn")
    assert shown["description"] == "Predicts churn"
    assert {(a["alias"], a["version"]) for a in shown["aliases"]} == {("challenger", 2)}
    assert "Predicts churn" in registry.ok("models", "show", "churn").stdout

    events = registry.json("audit", "list", "--limit", "1000")
    actions = [e["action"] for e in events]
    assert actions[:4] == ["create_user", "create_registered_model", "create_model_version", "create_model_version"]
    assert {
        "transition_stage",
        "set_alias",
        "set_registered_model_tag",
        "set_model_version_tag",
        "delete_registered_model_tag",
        "delete_model_version_tag",
        "update_registered_model",
        "update_model_version",
    } <= set(actions)
    assert {e["actor"] for e in events if e["model_name"] == "churn"} == {"admin"}
    for_model = registry.json("audit", "list", "--model", "churn", "--limit", "3")
    assert [e["action"] for e in for_model] == actions[1:4]
    assert "create_model_version" in registry.ok("audit", "list").stdout
    verified = registry.ok("audit", "verify")
    assert verified.stdout.strip() == f"audit chain intact: {len(events)} events"
    assert registry.json("audit", "verify") == {
        "ok": True,
        "events_checked": len(events),
        "first_bad_seq": None,
        "problem": "",
    }

    added = registry.json("users", "add", "eve", "--role", "engineer", "--role", "viewer")
    assert added["user"]["name"] == "eve" and added["user"]["roles"] == ["engineer", "viewer"]
    eve = added["token"]
    assert {u["name"]: u["roles"] for u in registry.json("users", "list")} == {
        "admin": ["admin"],
        "eve": ["engineer", "viewer"],
    }
    assert "eve" in registry.ok("users", "list").stdout
    human_add = registry.ok("users", "add", "frank", "--role", "viewer").stdout
    assert "Token (shown once" in human_add

    registry.ok("models", "create", "eve-model", token=eve)
    renamed = registry.json("models", "rename", "eve-model", "eve-renamed", token=eve)
    assert renamed["name"] == "eve-renamed"
    eve_events = registry.json("audit", "list", "--model", "eve-renamed")
    assert [(e["actor"], e["action"]) for e in eve_events] == [("eve", "rename_registered_model")]
    created_by = registry.json("audit", "list", "--model", "eve-model")
    assert [(e["actor"], e["action"]) for e in created_by] == [("eve", "create_registered_model")]

    registry.ok("aliases", "delete", "churn", "challenger")
    assert_error(registry.run("aliases", "show", "churn", "challenger"), "INVALID_PARAMETER_VALUE")
    assert "Deleted 'churn' version 2" in registry.ok("versions", "delete", "churn", "2", "--yes").stdout
    assert [v["version"] for v in registry.json("versions", "list", "churn")] == [1]
    registry.ok("models", "delete", "churn", input="y\n")
    assert_error(registry.run("models", "show", "churn"), "RESOURCE_DOES_NOT_EXIST")
    assert registry.ok("audit", "verify").stdout.startswith("audit chain intact: ")


@pytest.fixture
def churn(registry: Registry) -> Registry:
    """``registry`` with model 'churn' holding version 1."""
    registry.ok("models", "create", "churn")
    registry.ok("versions", "register", "churn", str(registry.artifact()))
    return registry


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (["models", "show", "nope"], "RESOURCE_DOES_NOT_EXIST", "name=nope"),
        (["versions", "list", "nope"], "RESOURCE_DOES_NOT_EXIST", "name=nope"),
        (["versions", "show", "churn", "7"], "RESOURCE_DOES_NOT_EXIST", "version=7"),
        (["versions", "transition", "churn", "1", "Limbo"], "INVALID_PARAMETER_VALUE", "Limbo"),
        (["versions", "show", "churn", "abc"], "INVALID_PARAMETER_VALUE", "'abc'"),
        (["versions", "transition", "churn", "abc", "Staging"], "INVALID_PARAMETER_VALUE", "'abc'"),
        (["models", "create", "churn"], "RESOURCE_ALREADY_EXISTS", "churn"),
        (["models", "create", "a/b"], "INVALID_PARAMETER_VALUE", "a/b"),
        (["versions", "register", "churn", "relative/path"], "INVALID_PARAMETER_VALUE", "relative path"),
        (["versions", "register", "churn", "/etc"], "INVALID_PARAMETER_VALUE", "refused"),
        (["aliases", "set", "churn", "latest", "1"], "INVALID_PARAMETER_VALUE", "reserved"),
        (["users", "add", "bob", "--role", "wizard"], "INVALID_PARAMETER_VALUE", "wizard"),
        (["users", "add", "bob"], "INVALID_PARAMETER_VALUE", "roles"),
        (["audit", "list", "--limit", "0"], "INVALID_PARAMETER_VALUE", "limit"),
    ],
)
def test_bad_input_is_one_error_line(churn: Registry, args: list[str], code: str, fragment: str) -> None:
    line = assert_error(churn.run(*args), code)
    assert fragment in line
    assert churn.run(*args).stdout == ""


def test_engineer_cannot_move_a_version_into_production(churn: Registry) -> None:
    token = churn.json("users", "add", "eve", "--role", "engineer")["token"]
    line = assert_error(
        churn.run("versions", "transition", "churn", "1", "Production", token=token), "PERMISSION_DENIED"
    )
    assert "'eve'" in line and "'admin' role is required" in line
    assert churn.json("versions", "show", "churn", "1", token=token)["current_stage"] == "None"
    assert churn.json("versions", "transition", "churn", "1", "Staging", token=token)["current_stage"] == "Staging"
    viewer = churn.json("users", "add", "val", "--role", "viewer")["token"]
    assert_error(churn.run("models", "create", "other", token=viewer), "PERMISSION_DENIED")
    assert_error(churn.run("users", "list", token=token), "PERMISSION_DENIED")


def test_audit_verify_detects_an_edited_event(churn: Registry) -> None:
    assert churn.ok("audit", "verify").stdout.strip() == "audit chain intact: 3 events"
    with sqlite3.connect(churn.data_dir / "calabi.db") as db:  # an attacker with full rights on the file
        db.execute("DROP TRIGGER audit_events_no_update")
        assert db.execute("UPDATE audit_events SET actor = 'mallory' WHERE seq = 2").rowcount == 1
    line = assert_error(churn.run("audit", "verify"), "AUDIT_CHAIN_BROKEN")
    assert "seq=2" in line and "edited" in line
    result = churn.run("audit", "verify", "--json")
    assert result.exit_code == 1
    assert json.loads(result.stdout)["first_bad_seq"] == 2


def test_token_from_environment_and_admin_token_file(registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    result = registry.runner.invoke(cli.app, ["models", "list"])
    assert "--token" in assert_error(result, "UNAUTHENTICATED")
    (registry.data_dir / "admin-token").write_text(registry.admin_token + "\n")
    assert registry.runner.invoke(cli.app, ["models", "create", "from-file"]).exit_code == 0
    token = registry.json("users", "add", "carol", "--role", "engineer")["token"]
    monkeypatch.setenv("CALABI_TOKEN", token)
    assert registry.runner.invoke(cli.app, ["models", "create", "from-env"]).exit_code == 0
    actors = {e["model_name"]: e["actor"] for e in registry.json("audit", "list", "--limit", "100")}
    assert actors["from-file"] == "admin" and actors["from-env"] == "carol"
    assert_error(registry.run("models", "list", token="not-a-token"), "UNAUTHENTICATED")


def test_data_dir_option_overrides_the_environment(registry: Registry, tmp_path: Path) -> None:
    empty = tmp_path / "elsewhere"
    result = registry.runner.invoke(cli.app, ["--data-dir", str(empty), "--token", "x", "models", "list"])
    line = assert_error(result, "TEMPORARILY_UNAVAILABLE")
    assert f"no registry database at {empty}" in line and not empty.exists()
    empty.mkdir()
    (empty / "calabi.db").touch()
    result = registry.runner.invoke(cli.app, ["--data-dir", str(empty), "--token", "x", "models", "list"])
    assert "no such table" in assert_error(result, "TEMPORARILY_UNAVAILABLE")
    ok = registry.runner.invoke(
        cli.app, ["--data-dir", str(registry.data_dir), "--token", registry.admin_token, "models", "list"]
    )
    assert ok.exit_code == 0, ok.output


def test_unreachable_database_is_one_line(registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALABI_DATABASE_URL", f"postgresql+psycopg://calabi:s3cret@127.0.0.1:{free_port()}/calabi")
    line = assert_error(registry.run("models", "list"), "TEMPORARILY_UNAVAILABLE")
    assert "127.0.0.1" in line and "s3cret" not in line


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["models", "create"], "Missing argument"),
        (["models", "create", "m", "--tag", "no-equals-sign"], "KEY=VALUE"),
        (["models", "list", "--max-results", "many"], "--max-results"),
        (["versions", "register", "m", "/x", "--tag", "k"], "KEY=VALUE"),
        (["models", "frobnicate"], "frobnicate"),
        (["--bogus", "models", "list"], "--bogus"),
    ],
)
def test_usage_errors_are_one_line(registry: Registry, args: list[str], fragment: str) -> None:
    result = registry.runner.invoke(cli.app, args)
    line = assert_error(result, "USAGE", exit_code=2)
    assert fragment in line


def test_declined_delete_changes_nothing(churn: Registry) -> None:
    result = churn.run("models", "delete", "churn", input="n\n")
    assert result.exit_code == 1
    assert result.stderr.startswith("Delete registered model 'churn' with all its versions and artifacts?")
    assert result.stderr.endswith("error: ABORTED: nothing was changed\n")
    assert churn.run("versions", "delete", "churn", "1", input="n\n").exit_code == 1
    assert [v["version"] for v in churn.json("versions", "list", "churn")] == [1]
    assert_error(churn.run("versions", "delete", "churn", "9", "--yes"), "RESOURCE_DOES_NOT_EXIST")


def test_help_lists_every_command_group(registry: Registry) -> None:
    result = registry.runner.invoke(cli.app, ["--help"])
    assert result.exit_code == 0
    for group in ("models", "versions", "aliases", "tags", "audit", "users", "serve"):
        assert group in result.stdout


def test_archive_existing_moves_the_other_staging_versions(churn: Registry) -> None:
    churn.ok("versions", "register", "churn", str(churn.artifact()))
    churn.ok("versions", "transition", "churn", "1", "Staging")
    moved = churn.json("versions", "transition", "churn", "2", "Staging", "--archive-existing")
    assert moved["current_stage"] == "Staging"
    stages = {v["version"]: v["current_stage"] for v in churn.json("versions", "list", "churn")}
    assert stages == {1: "Archived", 2: "Staging"}
