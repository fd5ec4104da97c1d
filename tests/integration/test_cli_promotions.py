"""The promotion commands of the ``calabi`` CLI against a live server with the embedded Temporal.

The CLI runs in-process (``CliRunner``) with only the server's URL and a token, as an engineer or
an approver on their own machine would: no data dir, database or Temporal setting. ``watch`` also
runs as a real ``calabi`` process to follow a promotion while it is signed off. The promoted
promotion's evidence pack is then exported, read through the API and shown as its printable page.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner, Result

import calabi.cli.main as cli
from tests.fixtures.servers import CALABI, LiveServer, free_port, make_artifact, start_server, stop_server
from tests.integration.audit_trail import verify_audit_trail
from tests.integration.page_session import signed_in

STATUS_TIMEOUT_S = 90  # per awaited status
POLL_S = 0.2
TERMINAL = {"promoted", "rejected", "expired", "cancelled", "failed"}
GOOD_DESCRIPTION = "Churn model trained on 2024-01-01 to 2024-12-31; holdout auc 0.81."


@dataclass(frozen=True)
class Cli:
    """``calabi --url <server> --token <user's token>``, as one user or another."""

    server: LiveServer
    env: dict[str, str | None]  # for CliRunner: None removes a variable
    engineer: str
    approver: str
    approver_name: str
    runner: CliRunner
    local: Path  # the user's own files

    def run(self, *args: str, token: str | None = None, url: str | None = None) -> Result:
        return self.runner.invoke(cli.app, ["--url", url or self.server.url, "--token", token or self.engineer, *args],
                                  env=self.env)

    def ok(self, *args: str, token: str | None = None) -> Result:
        result = self.run(*args, token=token)
        assert result.exit_code == 0, f"calabi {' '.join(args)}: {result.output}"
        return result

    def json(self, *args: str, token: str | None = None) -> Any:
        return json.loads(self.ok(*args, "--json", token=token).stdout)

    def wait_for(self, promotion_id: str, status: str) -> dict[str, Any]:
        """Poll ``promotions show --json`` until the promotion reaches ``status`` (bounded)."""
        deadline = time.monotonic() + STATUS_TIMEOUT_S
        while True:
            detail: dict[str, Any] = self.json("promotions", "show", promotion_id)
            current = detail["promotion"]["status"]
            if current == status:
                return detail
            if current in TERMINAL:
                pytest.fail(f"promotion {promotion_id} ended {current}, not {status}: {detail['promotion']['message']}")
            if time.monotonic() > deadline:
                pytest.fail(f"promotion {promotion_id} still {current} after {STATUS_TIMEOUT_S} s, not {status}")
            time.sleep(POLL_S)  # polling a condition with a deadline

    def model(self, *, ci_passed: bool = True, description: str = GOOD_DESCRIPTION) -> str:
        """A new model with one version carrying metrics, importances and (optionally) the CI attestation."""
        name = f"churn-{secrets.token_hex(4)}"
        self.ok("models", "create", name)
        artifact = make_artifact(self.local)
        (artifact / "metrics.json").write_text(json.dumps({"auc": 0.81, "log_loss": 0.41}))
        (artifact / "feature_importances.json").write_text(
            json.dumps({"tenure": 0.4, "monthly_charges": 0.35, "support_calls": 0.25}))
        tags = ["--tag", "ci.tests_passed=true"] if ci_passed else []
        self.ok("versions", "register", name, str(artifact), "--description", description, *tags)
        return name


def assert_error(result: Result, code: str, *, exit_code: int = 1) -> str:
    """Exit ``exit_code`` with exactly one stderr line ``error: CODE: …`` and no traceback."""
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == exit_code, result.output
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: {code}: "), lines[0]
    assert "Traceback" not in result.output
    return lines[0]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    started = start_server(tmp_path_factory.mktemp("cli-promotions"), temporal=True)
    yield started
    stop_server(started)


@pytest.fixture(scope="module")
def calabi(server: LiveServer, tmp_path_factory: pytest.TempPathFactory) -> Cli:
    config = tmp_path_factory.mktemp("config")
    env: dict[str, str | None] = {key: None for key in os.environ if key.startswith("CALABI_")}
    env.update({"XDG_CONFIG_HOME": str(config), "COLUMNS": "200"})  # rich tables: one line per row
    runner = CliRunner()

    def user(name: str, role: str) -> str:
        added = runner.invoke(cli.app, ["--url", server.url, "--token", server.admin_token, "users", "add", name,
                                        "--role", role, "--json"], env=env)
        assert added.exit_code == 0, added.output
        return str(json.loads(added.stdout)["token"])

    approver_name = f"ds-lead-{secrets.token_hex(3)}"
    engineer = user(f"ml-eng-{secrets.token_hex(3)}", "engineer")
    local = tmp_path_factory.mktemp("laptop")
    return Cli(server, env, engineer, user(approver_name, "approver"), approver_name, runner, local)


def watch_process(calabi: Cli, promotion_id: str, timeout_s: int) -> subprocess.Popen[str]:
    """``calabi promotions watch`` as its own process (the real entry point, exit code and all)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALABI_")}
    env.update({k: v for k, v in calabi.env.items() if v is not None})
    env.update({"CALABI_URL": calabi.server.url, "CALABI_TOKEN": calabi.engineer})
    return subprocess.Popen(
        [str(CALABI), "promotions", "watch", promotion_id, "--timeout", str(timeout_s)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


# ------------------------------------------------------------------------------- the happy path


def test_promote_show_sign_off_watch_and_export(calabi: Cli) -> None:
    name = calabi.model()

    # Staging needs no sign-off: watch follows it to the end and exits 0.
    staged = calabi.json("promote", name, "1", "--to", "Staging", "--reason", "CI green")
    assert (staged["model_name"], staged["version"], staged["target_stage"], staged["status"]) == (
        name, 1, "Staging", "running_checks")
    watched = calabi.ok("promotions", "watch", staged["id"], "--timeout", str(STATUS_TIMEOUT_S))
    assert "promoted" in watched.stdout.splitlines()[-1], watched.stdout

    # Production: checks, then one approver's sign-off.
    human = calabi.ok("promote", name, "1", "--to", "Production", "--reason", "auc 0.81 beats the 0.7 bar")
    promotion_id = human.stdout.split()[2].rstrip(":")
    assert human.stdout.startswith(f"Requested promotion {promotion_id}: '{name}' version 1 → Production"), human.stdout
    assert f"calabi promotions watch {promotion_id}" in human.stdout
    detail = calabi.wait_for(promotion_id, "awaiting_sign_off")
    assert detail["promotion"]["status"] == "awaiting_sign_off" and detail["promotion"]["required_approvals"] == 1
    assert detail["promotion"]["sign_off"]["approvers"] == 1 and "live" not in detail
    assert [h["status"] for h in detail["history"]][-1] == "awaiting_sign_off"

    shown = calabi.ok("promotions", "show", promotion_id).stdout
    assert re.search(rf"^Promotion\s+{promotion_id}\s*$", shown, re.MULTILINE), shown
    for expected in ("awaiting_sign_off", "Checklist: passed", "0 of 1 (approver)",
                     "auc: candidate 0.81, threshold 0.7, delta +0.11"):
        assert expected in shown, shown
    for check in ("tests", "metrics", "signature", "leakage", "description"):
        assert re.search(rf"│ {check}\s+│ PASS\s+│", shown), (check, shown)
    assert "FAIL" not in shown

    awaiting = calabi.json("promotions", "list", "--awaiting-me", token=calabi.approver)
    assert promotion_id in [p["id"] for p in awaiting]
    assert promotion_id not in [p["id"] for p in calabi.json("promotions", "list", "--awaiting-me")]
    listed = calabi.ok("promotions", "list", "--model", name).stdout
    assert promotion_id in listed and "awaiting_sign_off" in listed and "0/1" in listed

    # The requester cannot sign off; the approver can, and watch sees the promotion through.
    assert "approver" in assert_error(calabi.run("sign-off", promotion_id), "PERMISSION_DENIED")
    # A blank reason is INVALID_PARAMETER_VALUE, as through the API and the page (the service's rule).
    blank = assert_error(calabi.run("reject", promotion_id, "--reason", " \t ", token=calabi.approver),
                         "INVALID_PARAMETER_VALUE")
    assert blank.endswith("A rejection needs a reason."), blank
    watcher = watch_process(calabi, promotion_id, STATUS_TIMEOUT_S)
    try:
        # The approver logs in once on their machine; the sign-off uses the saved token.
        logged_in = calabi.runner.invoke(cli.app, ["login", calabi.server.url, "--token", calabi.approver],
                                         env=calabi.env)
        assert logged_in.exit_code == 0 and f"as '{calabi.approver_name}'" in logged_in.stdout, logged_in.output
        signed = calabi.runner.invoke(cli.app, ["--url", calabi.server.url, "sign-off", promotion_id, "--comment",
                                                "holdout reviewed"], env=calabi.env)
        assert signed.exit_code == 0, signed.output
        assert f"Signed off promotion {promotion_id}" in signed.stdout and "1 of 1" in signed.stdout
        stdout, stderr = watcher.communicate(timeout=STATUS_TIMEOUT_S + 30)
    finally:
        watcher.kill()
    assert watcher.returncode == 0, (stdout, stderr)
    assert f"signed off by {calabi.approver_name}: holdout reviewed" in stdout
    assert stdout.strip().splitlines()[-1].split()[1] == "promoted", stdout

    done = calabi.json("promotions", "show", promotion_id)
    assert done["promotion"]["status"] == "promoted" and not done["promotion"]["live"]
    assert [h["status"] for h in done["history"]][-1] == "promoted", done["history"]
    assert done["promotion"]["approvals"][0]["user"] == calabi.approver_name
    version = calabi.json("versions", "show", name, "1")
    assert version["current_stage"] == "Production" and version["tags"]["validated_by"] == calabi.approver_name
    assert "History" in calabi.ok("promotions", "show", promotion_id).stdout
    check_evidence_pack(calabi, promotion_id, version)


# ------------------------------------------------------------------------------- the evidence pack


def check_evidence_pack(calabi: Cli, promotion_id: str, version: dict[str, Any]) -> None:
    """The promoted promotion's pack, exported by the CLI, read through the API and printed as a page."""
    calabi.ok("audit", "verify")  # sets the signed anchor the pack reports
    out_file = calabi.local / f"pack-{promotion_id}.json"
    exported = calabi.ok("promotions", "export", promotion_id, "--out", str(out_file), token=calabi.approver)
    assert exported.stdout.startswith(f"Wrote the evidence pack of promotion {promotion_id} to {out_file}")
    pack = json.loads(out_file.read_text(encoding="utf-8"))
    assert pack["format"] == "calabi-evidence-pack/1" and pack["exported_by"] == calabi.approver_name
    assert_error(calabi.run("promotions", "export", promotion_id, "--out", str(calabi.local / "no-dir" / "p.json")),
                 "INVALID_PARAMETER_VALUE")

    promotion, candidate, policy = pack["promotion"], pack["candidate"], pack["policy"]
    assert (candidate["model_name"], candidate["version"]) == (version["name"], 1)
    assert candidate["digest"] == candidate["current_digest"] == version["digest"] != ""
    assert (candidate["source"], candidate["run_id"]) == (version["source"], version["run_id"])
    assert policy["recorded_hash"] == promotion["policy_hash"] == policy["current_hash"] != ""
    assert not policy["changed"] and policy["problem"] == ""
    assert len(policy["files"]) == 1 and "[production" in policy["files"][0]["text"]  # the packaged default's text
    checks = promotion["checklist"]["results"]
    assert sorted(c["name"] for c in checks) == ["description", "leakage", "metrics", "signature", "tests"]
    assert all(c["passed"] for c in checks)
    assert {"label": "auc", "candidate": 0.81}.items() <= next(
        n for c in checks if c["name"] == "metrics" for n in c["numbers"] if n["label"] == "auc").items()
    assert promotion["requester"] != calabi.approver_name and promotion["creation_timestamp"] > 0
    assert [a["user"] for a in promotion["approvals"]] == [calabi.approver_name]
    assert promotion["history"][-1]["status"] == "promoted" and promotion["evidence_hash"]
    assert pack["notifications"] and {n["promotion_id"] for n in pack["notifications"]} == {promotion_id}

    audit = pack["audit"]
    events = {e["action"]: e for e in audit["events"]}
    assert {"request_promotion", "bind_promotion_evidence", "sign_off_promotion", "transition_stage",
            "promotion_state", "set_model_version_tag"} <= events.keys()
    assert events["sign_off_promotion"]["after"]["evidence_hash"] == promotion["evidence_hash"]
    assert events["sign_off_promotion"]["actor"] == calabi.approver_name
    verify_audit_trail(audit)
    tampered = {**audit, "events": [{**audit["events"][0], "actor": "someone-else"}, *audit["events"][1:]]}
    with pytest.raises(AssertionError, match="event"):
        verify_audit_trail(tampered)
    anchor = audit["anchor"]
    assert anchor["held"] and anchor["seq"] <= audit["head_seq"] and anchor["problem"] == ""

    reply = httpx.get(f"{calabi.server.url}/api/v1/promotions/{promotion_id}/evidence-pack",
                      headers={"Authorization": f"Bearer {calabi.engineer}"}, timeout=30)
    assert reply.status_code == 200, reply.text
    assert {k: v for k, v in reply.json().items() if k not in ("exported_at", "exported_by")} == {
        k: v for k, v in pack.items() if k not in ("exported_at", "exported_by")}

    browser = signed_in(calabi.server, calabi.engineer)
    assert f'href="/ui/promotions/{promotion_id}/evidence-pack"' in browser.page(f"/ui/promotions/{promotion_id}")
    page = browser.text(f"/ui/promotions/{promotion_id}/evidence-pack")
    for expected in (candidate["digest"], policy["recorded_hash"], promotion["evidence_hash"], calabi.approver_name,
                     audit["head_hash"], "Chain head at export", "auc", policy["files"][0]["text"].splitlines()[0]):
        assert expected in page, expected
    assert browser.http.get(f"/ui/promotions/{promotion_id}/evidence-pack.json").json()["candidate"] == candidate
    browser.page("/ui/promotions/0123456789abcdef/evidence-pack", status=404)


# ------------------------------------------------------------------------------- failing and stopping


def test_failed_checks_watch_timeout_and_cancel(calabi: Cli) -> None:
    name = calabi.model(ci_passed=False)
    promotion_id = calabi.json("promote", name, "1", "--to", "Staging", "--reason", "try it")["id"]
    calabi.wait_for(promotion_id, "checks_failed")

    shown = calabi.ok("promotions", "show", promotion_id).stdout
    assert "Checklist: failed" in shown and "FAIL" in shown and "ci.tests_passed" in shown, shown
    assert promotion_id in [p["id"] for p in calabi.json("promotions", "list", "--status", "checks_failed")]

    timed_out = calabi.run("promotions", "watch", promotion_id, "--timeout", "0")
    assert "checks_failed" in timed_out.stdout
    assert "still checks_failed" in assert_error(timed_out, "DEADLINE_EXCEEDED")

    assert "Cancelled promotion" in calabi.ok("cancel", promotion_id, "--reason", "wrong version").stdout
    assert "cancelled by" in calabi.wait_for(promotion_id, "cancelled")["promotion"]["message"]
    ended = calabi.run("promotions", "watch", promotion_id, "--timeout", "5")
    assert "cancelled" in ended.stdout
    assert "wrong version" in assert_error(ended, "NOT_PROMOTED")
    assert calabi.json("versions", "show", name, "1")["current_stage"] == "None"


# ------------------------------------------------------------------------------- errors


def test_errors_are_one_line(calabi: Cli) -> None:
    missing = "0123456789abcdef"
    assert_error(calabi.run("promotions", "show", missing), "RESOURCE_DOES_NOT_EXIST")
    assert_error(calabi.run("sign-off", missing, token=calabi.approver), "RESOURCE_DOES_NOT_EXIST")
    assert_error(calabi.run("promotions", "watch", missing, "--timeout", "1"), "RESOURCE_DOES_NOT_EXIST")
    nowhere_file = calabi.local / "missing-pack.json"
    assert_error(calabi.run("promotions", "export", missing, "--out", str(nowhere_file)), "RESOURCE_DOES_NOT_EXIST")
    assert not nowhere_file.exists()
    reply = httpx.get(f"{calabi.server.url}/api/v1/promotions/{missing}/evidence-pack",
                      headers={"Authorization": f"Bearer {calabi.engineer}"}, timeout=30)
    assert (reply.status_code, reply.json()["error_code"]) == (404, "RESOURCE_DOES_NOT_EXIST")
    assert "--reason" in assert_error(calabi.run("reject", missing, token=calabi.approver), "USAGE", exit_code=2)
    assert_error(calabi.run("promote", "churn", "1", "--reason", "x"), "USAGE", exit_code=2)  # no --to
    assert_error(calabi.run("promotions", "list", "--status", "bogus"), "INVALID_PARAMETER_VALUE")

    name = calabi.model()
    nowhere = f"http://127.0.0.1:{free_port()}"
    line = assert_error(calabi.run("promote", name, "1", "--to", "Staging", "--reason", "x", url=nowhere),
                        "TEMPORARILY_UNAVAILABLE")
    assert nowhere in line
    assert calabi.json("promotions", "list", "--model", name) == []  # nothing was recorded


def test_serving_schema_set_and_show(calabi: Cli, tmp_path: Path) -> None:
    name = calabi.model()
    assert_error(calabi.run("serving-schema", "show", name), "RESOURCE_DOES_NOT_EXIST")
    model_dir = make_artifact(tmp_path)
    assert "set" in calabi.ok("serving-schema", "set", name, str(model_dir)).stdout
    shown = calabi.json("serving-schema", "show", name)
    assert json.loads(json.loads(shown["signature"])["inputs"]) == [{"type": "double", "name": "tenure"}]
    assert "tenure" in calabi.ok("serving-schema", "show", name).stdout
    schema_file = tmp_path / "schema.json"
    schema_file.write_text(json.dumps({"inputs": json.dumps([{"type": "long", "name": "calls"}])}))
    calabi.ok("serving-schema", "set", name, str(schema_file))
    assert "calls" in calabi.ok("serving-schema", "show", name).stdout
    assert_error(calabi.run("serving-schema", "set", name, '{"outputs": "[]"}'), "INVALID_PARAMETER_VALUE")
    assert_error(calabi.run("serving-schema", "set", name, str(tmp_path / "nothing.json")),
                 "INVALID_PARAMETER_VALUE")
    viewer_token = calabi.json("users", "add", f"viewer-{secrets.token_hex(3)}", "--role", "viewer",
                               token=calabi.server.admin_token)["token"]
    assert_error(calabi.run("serving-schema", "set", name, str(schema_file), token=viewer_token), "PERMISSION_DENIED")
