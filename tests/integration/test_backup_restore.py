"""``calabi backup``, ``restore`` and ``verify-store`` on a real install.

SQLite and a local store: a backup taken from a live server while a thread keeps registering
versions through the API, restored into a fresh data dir (another artifact root: the locations
move), verified, then damaged. PostgreSQL and S3 (moto): pg_dump/pg_restore into a fresh database,
verify-store against the bucket, a changed object and an orphan found. The commands run in-process
(``CliRunner``) on the server's settings, as an operator on the server's host runs them.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from typer.testing import CliRunner, Result

import calabi.cli.main as cli
from calabi.bootstrap import build_services
from calabi.settings import Settings
from registry_store.audit import verify_chain
from registry_store.backup_format import BACKUP_FILE
from registry_store.db import Database, make_engine
from tests.e2e.helpers import create_model, create_version, random_name
from tests.fixtures.postgres import PostgresServer
from tests.fixtures.servers import LiveServer
from tests.integration.helpers import build_registry

WRITES_DEADLINE_S = 60
MAX_WRITES = 200


def _calabi(*args: str, env: dict[str, str] | None = None) -> Result:
    """``calabi <args>`` in-process; the umask the command sets (077) is put back for the rest of the session."""
    umask = os.umask(0o077)
    try:
        return CliRunner().invoke(cli.app, list(args), env=env)
    finally:
        os.umask(umask)


def _ok(*args: str, env: dict[str, str] | None = None) -> Result:
    result = _calabi(*args, env=env)
    assert result.exit_code == 0, f"calabi {' '.join(args)}: {result.output}"
    return result


def _verify(*args: str, env: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    result = _calabi("verify-store", "--json", *args, env=env)
    return result.exit_code, json.loads(result.stdout)


class _Registrations:
    """A thread registering versions of one model through the API until stopped (bounded)."""

    def __init__(self, server: LiveServer, http: httpx.Client) -> None:
        self.model = create_model(http, random_name("backup"))
        self.acked: list[int] = []
        self._server, self._http = server, http
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        for _ in range(MAX_WRITES):
            if self._stop.is_set():
                return
            self.acked.append(int(create_version(self._http, self._server, self.model)["version"]))

    def wait_for(self, count: int) -> list[int]:
        deadline = time.monotonic() + WRITES_DEADLINE_S
        while len(self.acked) < count:
            assert self._thread.is_alive(), "the registering thread stopped"
            assert time.monotonic() < deadline, "registrations did not progress"
            time.sleep(0.02)  # polling a condition with a deadline
        return list(self.acked)

    def stop(self) -> list[int]:
        self._stop.set()
        self._thread.join(timeout=WRITES_DEADLINE_S)
        assert not self._thread.is_alive()
        return list(self.acked)


def _versions(database: Path, model: str) -> list[int]:
    with sqlite3.connect(database) as connection:
        rows = connection.execute("SELECT v.version FROM model_versions v JOIN registered_models m "
                                  "ON m.id = v.model_id WHERE m.name = ? ORDER BY v.version", (model,)).fetchall()
    return [row[0] for row in rows]


def _chain_and_last_action(url: str) -> tuple[bool, str]:
    db = Database(make_engine(url, pool_size=1))
    try:
        with db.read() as session:
            verified = verify_chain(session)
            last = session.connection().exec_driver_sql(
                "SELECT action FROM audit_events ORDER BY seq DESC LIMIT 1").scalar_one()
    finally:
        db.engine.dispose()
    return verified.ok, str(last)


def test_sqlite_backup_during_writes_restores_elsewhere_and_verifies(live_server: LiveServer, tmp_path: Path) -> None:
    backup_dir, restored = tmp_path / "backup", tmp_path / "restored"
    with live_server.client() as http:
        writes = _Registrations(live_server, http)
        before = writes.wait_for(3)
        result = _ok("backup", "--out", str(backup_dir), "--data-dir", str(live_server.data_dir))
        writes.wait_for(min(len(writes.acked) + 1, MAX_WRITES))  # the server kept registering (a slow backup may
        # outlast the thread's bounded run: then its last writes were acknowledged during the backup)
        acked = writes.stop()
    info = json.loads((backup_dir / BACKUP_FILE).read_text())
    assert f"audit head {info['audit_head']['seq']}" in result.stdout
    assert info["database"]["backend"] == "sqlite" and info["artifacts"]["copied"] is True
    assert not (tmp_path / "backup.tmp").exists()

    restore = _ok("restore", str(backup_dir), "--data-dir", str(restored))
    assert "the audit chain verifies" in restore.stdout and "now stored below" in restore.stdout
    again = _calabi("restore", str(backup_dir), "--data-dir", str(restored))
    assert again.exit_code == 1 and "is not empty" in again.output and len(again.output.splitlines()) == 1

    tree_copy = next(p for p in (backup_dir / "artifacts" / writes.model).iterdir())
    (tree_copy / "model.pkl").write_bytes(b"bit rot")
    damaged = _calabi("restore", str(backup_dir), "--data-dir", str(tmp_path / "elsewhere"))
    assert damaged.exit_code == 1 and "DATA_LOSS" in damaged.output and "is damaged" in damaged.output
    assert not (tmp_path / "elsewhere").exists()  # checked before anything was written

    database = restored / "calabi.db"
    in_backup = _versions(database, writes.model)
    assert set(before) <= set(in_backup) <= set(acked)  # every version acknowledged before the backup; no other
    assert in_backup == list(range(1, len(in_backup) + 1))
    assert _chain_and_last_action(f"sqlite:///{database}") == (True, "restore_backup")
    services = build_services(Settings(data_dir=restored))
    try:  # the server key came along: the old tokens work, and the new anchor signs the restored head
        admin = services.users.authenticate(live_server.admin_token)
        assert services.registry.audit.verify_audit_chain(admin, services.audit_anchor).ok
    finally:
        services.close()
    code, report = _verify("--data-dir", str(restored))
    assert (code, report["problems"], report["orphans"]) == (0, [], [])
    assert (report["versions_checked"], report["files_checked"]) == (info["counts"]["versions"],
                                                                     info["counts"]["files"])

    tree = next(p for p in (restored / "artifacts" / writes.model).iterdir())
    (tree / "model.pkl").write_bytes(b"tampered")
    (tree / "MLmodel").unlink()
    orphan = restored / "artifacts" / writes.model / uuid.uuid4().hex
    orphan.mkdir()
    (orphan / "model.pkl").write_bytes(b"left behind")
    code, report = _verify("--data-dir", str(restored))
    assert code == 1
    assert sorted((p["file"], p["problem"].split(",")[0].split(" ")[0]) for p in report["problems"]) == [
        ("MLmodel", "missing"), ("model.pkl", "sha256")]
    assert [o["artifact_id"] for o in report["orphans"]] == [orphan.name]

    # a backup of the damaged install says so, and restores it as it was (verify-store names the same files)
    damaged_backup = _calabi("backup", "--out", str(tmp_path / "backup2"), "--data-dir", str(restored))
    assert damaged_backup.exit_code == 1 and "file 'MLmodel' is missing" in damaged_backup.output
    as_found = _calabi("restore", str(tmp_path / "backup2"), "--data-dir", str(tmp_path / "restored2"))
    assert as_found.exit_code == 0 and "restored as found" in as_found.output, as_found.output
    code, again_report = _verify("--data-dir", str(tmp_path / "restored2"))
    assert (code, [p["file"] for p in again_report["problems"]]) == (1, [p["file"] for p in report["problems"]])


@pytest.mark.postgres
def test_postgres_and_s3_round_trip_and_verify_store(
    postgres_url: str, postgres_server: PostgresServer, s3_endpoint: str, s3_bucket: str, tmp_path: Path
) -> None:
    root = f"s3://{s3_bucket}/registry"
    registry = build_registry(tmp_path / "source", postgres_url, artifact_root=root, s3_endpoint_url=s3_endpoint)
    try:
        registry.versions("churn", 2)
        registry.versions("fraud", 1)
        registry.svc.models.rename_registered_model(registry.admin, name="fraud", new_name="fraud-v2")
    finally:
        registry.services.close()
    source_env = {"CALABI_DATABASE_URL": postgres_url, "CALABI_ARTIFACT_ROOT": root,
                  "CALABI_S3_ENDPOINT_URL": s3_endpoint}
    backup_dir = tmp_path / "backup"
    result = _ok("backup", "--out", str(backup_dir), "--data-dir", str(tmp_path / "source" / "data"), env=source_env)
    assert "versioning" in result.stdout
    info = json.loads((backup_dir / BACKUP_FILE).read_text())
    assert info["database"]["backend"] == "postgresql" and info["artifacts"]["copied"] is False
    assert info["counts"]["versions"] == 3

    target_url = postgres_server.create_database()
    try:
        _restore_and_verify_on_s3(backup_dir, tmp_path, source_env, target_url, s3_endpoint, s3_bucket)
    finally:
        postgres_server.drop_database(target_url)


def _restore_and_verify_on_s3(
    backup_dir: Path, tmp_path: Path, source_env: dict[str, str], target_url: str, s3_endpoint: str, s3_bucket: str
) -> None:
    target_env = {**source_env, "CALABI_DATABASE_URL": target_url}
    refused = _calabi("restore", str(backup_dir), "--data-dir", str(tmp_path / "other"), env=source_env)
    assert refused.exit_code == 1 and "not empty" in refused.output
    _ok("restore", str(backup_dir), "--data-dir", str(tmp_path / "restored"), env=target_env)
    assert _chain_and_last_action(target_url) == (True, "restore_backup")
    code, report = _verify("--data-dir", str(tmp_path / "restored"), env=target_env)
    assert (code, report["versions_checked"], report["problems"], report["orphans"]) == (0, 3, [], [])

    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    key = next(item["Key"] for item in s3.list_objects_v2(Bucket=s3_bucket, Prefix="registry/churn/")["Contents"]
               if item["Key"].endswith("/model.pkl"))
    s3.put_object(Bucket=s3_bucket, Key=key, Body=b"overwritten")
    orphan_id = uuid.uuid4().hex
    s3.put_object(Bucket=s3_bucket, Key=f"registry/churn/{orphan_id}/MLmodel", Body=b"left behind")
    code, report = _verify("--data-dir", str(tmp_path / "restored"), env=target_env)
    assert code == 1
    assert [(p["model"], p["file"]) for p in report["problems"]] == [("churn", "model.pkl")]
    assert [o["artifact_id"] for o in report["orphans"]] == [orphan_id]
