"""``calabi`` and ``activities`` call the registry services, never tables, sessions or the database."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import activities
import calabi

FORBIDDEN = ("registry_store.tables", "registry_store.db", "registry_store.context", "sqlmodel", "sqlalchemy.orm")
MODULES = sorted(
    path for package in (calabi, activities) for path in Path(package.__file__).parent.rglob("*.py")
    if path.name != "bootstrap.py"  # the composition root builds the database and the context
)


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports absolutely (``from a.b import c`` counts as ``a.b`` and ``a.b.c``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def forbidden(path: Path) -> list[str]:
    """The imports of ``path`` that reach below the services."""
    return sorted(m for m in imported_modules(path) if any(m == f or m.startswith(f"{f}.") for f in FORBIDDEN))


def test_the_packages_have_modules() -> None:
    names = {p.name for p in MODULES}
    assert {"v1_routes.py", "mlflow_routes.py", "models.py", "promotion.py", "serve.py"} <= names


@pytest.mark.parametrize("path", MODULES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_module_uses_services_not_tables_or_sessions(path: Path) -> None:
    assert forbidden(path) == []


@pytest.mark.parametrize(
    ("source", "found"),
    [
        ("from registry_store.tables import ModelVersionRow", ["registry_store.tables",
                                                             "registry_store.tables.ModelVersionRow"]),
        ("from sqlmodel import Session", ["sqlmodel", "sqlmodel.Session"]),
        ("import registry_store.db", ["registry_store.db"]),
        ("from registry_store import tables", ["registry_store.tables"]),
        ("from registry_store.entities import Page\nfrom registry_store.service import RegistryService", []),
    ],
)
def test_the_check_sees_table_and_session_imports(tmp_path: Path, source: str, found: list[str]) -> None:
    module = tmp_path / "m.py"
    module.write_text(source)
    assert forbidden(module) == found
