"""``policies`` imports only pydantic, jinja2 and the standard library (and itself)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import policies

ALLOWED = {"pydantic", "jinja2", "policies", "__future__"} | set(sys.stdlib_module_names)
PACKAGE = Path(policies.__file__).parent
MODULES = sorted(PACKAGE.rglob("*.py"))


def imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) in {
            "__import__",
            "import_module",
        }:
            roots.add("<dynamic import>")
    return roots


def test_the_package_has_modules() -> None:
    assert {p.name for p in MODULES} >= {"models.py", "checks.py", "loading.py", "render.py", "evidence.py"}


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_module_imports_only_allowed_packages(path: Path) -> None:
    assert imported_roots(path) - ALLOWED == set()


@pytest.mark.parametrize(
    ("source", "outside"),
    [
        ("import registry_store", {"registry_store"}),
        ("from temporalio import workflow", {"temporalio"}),
        ("import sqlmodel.main as m", {"sqlmodel"}),
        ("import importlib\nimportlib.import_module('boto3')", {"<dynamic import>"}),
        ("from . import models\nimport json, re", set()),
    ],
)
def test_the_walker_catches_forbidden_imports(tmp_path: Path, source: str, outside: set[str]) -> None:
    path = tmp_path / "module.py"
    path.write_text(source)

    assert imported_roots(path) - ALLOWED == outside
