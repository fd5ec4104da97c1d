"""The composition root builds without side effects; ``prepare`` readies a data dir once."""

from __future__ import annotations

import os
import time
from pathlib import Path

from pydantic import SecretStr

from calabi.bootstrap import build_services, prepare
from calabi.settings import Settings

TOKEN = "a" * 24


def test_building_the_services_creates_no_directory_file_schema_or_user(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    services = build_services(Settings(data_dir=data_dir, admin_token=SecretStr(TOKEN)))
    services.close()

    assert list(tmp_path.iterdir()) == []


def test_prepare_creates_the_data_dir_migrates_seeds_the_admin_and_sweeps_stale_staging(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", admin_token=SecretStr(TOKEN))
    prepare(settings)
    stale = tmp_path / "data" / "artifacts" / ":staging" / "left-by-a-killed-registration"
    stale.mkdir(parents=True)
    old = time.time() - settings.orphan_min_age_s - 60
    os.utime(stale, (old, old))

    prepare(settings)  # a second start-up: idempotent, and the leftover is swept

    assert (tmp_path / "data" / "calabi.db").is_file() and not stale.exists()
    services = build_services(settings)
    try:
        admin = services.users.authenticate(TOKEN)
        assert "admin" in admin.roles
        assert services.registry.models.search_registered_models(admin).items == []
    finally:
        services.close()
