"""The built wheel installs only the project's own top-level names, with its data files and the console script."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOP_LEVEL = {"calabi", "workflows", "activities", "registry_store", "policies", "worker.py"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out), str(ROOT)],
        check=True, timeout=300, stdin=subprocess.DEVNULL,
    )
    (built,) = out.glob("calabi_registry-*.whl")
    return zipfile.ZipFile(built)


def top_level_names(wheel: zipfile.ZipFile) -> set[str]:
    return {name.split("/")[0] for name in wheel.namelist() if ".dist-info/" not in name}


def test_the_wheel_installs_only_the_projects_top_level_names(wheel: zipfile.ZipFile) -> None:
    assert top_level_names(wheel) == TOP_LEVEL


def test_the_one_list_in_pyproject_is_what_the_wheel_ships(wheel: zipfile.ZipFile) -> None:
    listed = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["hatch"]["build"]["targets"]["wheel"]

    assert set(listed["only-include"]) == top_level_names(wheel)


def test_the_wheel_carries_templates_policies_and_migrations(wheel: zipfile.ZipFile) -> None:
    assert {
        "calabi/api/templates/base.html",
        "calabi/api/static/calabi.css",
        "policies/default.toml",
        "policies/templates/description.j2",
        "registry_store/migrations/env.py",
        "registry_store/migrations/versions/0001_initial_schema.py",
    } <= set(wheel.namelist())


def test_the_console_script_points_into_the_calabi_package(wheel: zipfile.ZipFile) -> None:
    (entry_points,) = [name for name in wheel.namelist() if name.endswith(".dist-info/entry_points.txt")]

    assert "calabi = calabi.cli.main:main" in wheel.read(entry_points).decode().splitlines()
