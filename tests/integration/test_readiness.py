"""``/ready`` names what keeps a replica from serving; ``calabi serve``/``worker`` refuse a newer schema."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

import httpx
from alembic import command
from alembic.config import Config

from calabi.api.app import create_app
from calabi.bootstrap import build_services, prepare
from calabi.settings import Settings
from registry_store.schema_revision import MIGRATIONS, schema_revision
from tests.fixtures.servers import CALABI, free_port
from tests.fixtures.tracking import TrackingServer


def settings(data_dir: Path, **overrides: object) -> Settings:
    """A ``--no-temporal``, ``--no-tracking`` replica's settings unless ``overrides`` name a dependency."""
    base: dict[str, object] = {"data_dir": data_dir, "database_url": None, "temporal_address": None,
                               "mlflow_tracking_url": None, "artifact_root": None}
    return Settings(**(base | overrides))  # type: ignore[arg-type]


async def ready(config: Settings) -> tuple[int, dict[str, dict[str, object]]]:
    """``GET /ready`` on the real app over services built from ``config``: status and checks."""
    services = build_services(config)
    try:
        transport = httpx.ASGITransport(app=create_app(services))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            response = await client.get("/ready")
    finally:
        services.close()
    body = response.json()
    assert body["ready"] == (response.status_code == 200)
    return response.status_code, body["checks"]


def failing(checks: dict[str, dict[str, object]]) -> set[str]:
    return {name for name, check in checks.items() if not check["ok"]}


async def test_ready_names_what_is_not_ready(
    tmp_path: Path, tracking_server: TrackingServer, s3_endpoint: str, s3_bucket: str
) -> None:
    healthy = settings(tmp_path / "data")
    prepare(healthy)
    status, checks = await ready(healthy)
    assert status == 200, checks
    assert set(checks) == {"database", "migrations", "artifact_store", "temporal", "tracking_server"}
    assert checks["temporal"]["detail"] == checks["tracking_server"]["detail"] == "not configured"

    status, checks = await ready(healthy.model_copy(update={
        "mlflow_tracking_url": tracking_server.url, "artifact_root": f"s3://{s3_bucket}/models",
        "s3_endpoint_url": s3_endpoint}))
    assert status == 200, checks
    assert checks["tracking_server"]["detail"] == "reachable"
    assert checks["artifact_store"]["detail"] == "bucket reachable"
    status, checks = await ready(healthy.model_copy(update={
        "artifact_root": f"s3://{s3_bucket}-missing/models", "s3_endpoint_url": s3_endpoint}))
    assert (status, failing(checks)) == (503, {"artifact_store"})

    closed = f"127.0.0.1:{free_port()}"
    status, checks = await ready(healthy.model_copy(
        update={"temporal_address": closed, "mlflow_tracking_url": f"http://{closed}"}))
    assert status == 503
    assert failing(checks) == {"temporal", "tracking_server"}  # answered although neither listens
    assert closed.split(":")[1] not in str(checks)  # no addresses in the body

    older = tmp_path / "older.db"
    shutil.copy(tmp_path / "data" / "calabi.db", older)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", f"sqlite:///{older}")
    command.downgrade(config, "-1")
    status, checks = await ready(healthy.model_copy(update={"database_url": f"sqlite:///{older}"}))
    assert status == 503
    assert failing(checks) == {"migrations"}
    assert "run the migrations" in str(checks["migrations"]["detail"])

    shutil.rmtree(tmp_path / "data" / "artifacts")
    status, checks = await ready(healthy)
    assert (status, failing(checks)) == (503, {"artifact_store"})


def test_serve_and_worker_refuse_a_database_migrated_by_a_newer_calabi(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    prepare(settings(data_dir))
    database = data_dir / "calabi.db"
    with sqlite3.connect(database) as connection:
        connection.execute("UPDATE alembic_version SET version_num = '9999_from_the_future'")
    head = schema_revision(None).head
    env = {key: value for key, value in os.environ.items() if not key.startswith("CALABI_")}
    env |= {"CALABI_DATA_DIR": str(data_dir), "CALABI_TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}"}
    port = free_port()
    for args in (["serve", "--port", str(port), "--no-temporal", "--no-tracking"], ["worker"]):
        done = subprocess.run([str(CALABI), *args], env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 1, done.stderr
        assert done.stderr.strip().splitlines() == [
            f"error: the database is at schema revision 9999_from_the_future, newer than this Calabi "
            f"(head {head}); upgrade Calabi"
        ]
    with sqlite3.connect(database) as connection:  # never downgraded, nothing migrated
        assert connection.execute("SELECT version_num FROM alembic_version").fetchall() == [("9999_from_the_future",)]
    assert not (data_dir / "admin-token").exists()
