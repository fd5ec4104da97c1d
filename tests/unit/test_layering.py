"""The direction of imports, package by package (docs/architecture.md draws it).

Each rule reads the modules' import statements (``TYPE_CHECKING`` blocks included), so a
forbidden import fails here before it can pull a database driver into a workflow or a
registry table into a route.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STDLIB = frozenset(sys.stdlib_module_names) | {"__future__"}
DYNAMIC = "<dynamic import>"


@dataclass(frozen=True)
class Rule:
    """Imports of the modules under ``package``: only roots in ``only`` (when given), never a name in ``never``."""

    package: str
    only: frozenset[str] | None = None
    never: frozenset[str] = field(default_factory=frozenset)
    exempt: frozenset[str] = field(default_factory=frozenset)  # file names the rule does not apply to

    def modules(self) -> list[Path]:
        base = ROOT.joinpath(*self.package.split("."))
        found = sorted(base.rglob("*.py")) if base.is_dir() else [base.with_suffix(".py")]
        return [path for path in found if path.name not in self.exempt]

    def violations(self, path: Path) -> set[str]:
        names = imported_names(path)
        bad = {n for n in names if any(n == f or n.startswith(f"{f}.") for f in self.never)}
        if self.only is not None:
            bad |= {n for n in names if n.split(".")[0] not in self.only | STDLIB}
        return bad


BELOW_THE_SERVICES = frozenset(
    {"sqlmodel", "sqlalchemy.orm", "registry_store.tables", "registry_store.db", "registry_store.context"}
)
RULES = [
    Rule("policies", only=frozenset({"pydantic", "jinja2", "policies"})),
    Rule("workflows", only=frozenset({"temporalio", "pydantic", "policies", "workflows"})),
    Rule("registry_store", never=frozenset({"calabi", "activities", "workflows", "worker", DYNAMIC})),
    Rule("activities", never=BELOW_THE_SERVICES | {"calabi", "worker", "sqlalchemy"}),
    # The composition root builds the database and the context; everything else in calabi calls services.
    Rule("calabi", never=BELOW_THE_SERVICES, exempt=frozenset({"bootstrap.py"})),
    Rule("calabi.api", never=BELOW_THE_SERVICES | {"sqlalchemy", "worker", DYNAMIC}),
    Rule("calabi.client", only=frozenset({"httpx", "policies"})),
]
CASES = [(rule, path) for rule in RULES for path in rule.modules()]


def imported_names(path: Path) -> set[str]:
    """Dotted names a module imports (``from a import b`` gives ``a`` and ``a.b``); relative imports are skipped."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) in {
            "__import__",
            "import_module",
        }:
            names.add(DYNAMIC)
    return names


@pytest.mark.parametrize(("rule", "path"), CASES, ids=[str(p.relative_to(ROOT)) for _, p in CASES])
def test_module_respects_its_layer(rule: Rule, path: Path) -> None:
    assert rule.violations(path) == set()


def test_every_rule_covers_modules() -> None:
    assert all(rule.modules() for rule in RULES)
    assert {p.name for p in Rule("policies").modules()} >= {"models.py", "checks.py", "loading.py", "evidence.py"}
    assert {p.name for p in RULES[4].modules()} >= {"v1_routes.py", "mlflow_routes.py", "serve.py", "engine.py"}
    assert "bootstrap.py" not in {p.name for p in RULES[4].modules()}


@pytest.mark.parametrize(
    ("rule", "source", "caught"),
    [
        (RULES[0], "import registry_store", {"registry_store"}),
        (RULES[0], "import importlib\nimportlib.import_module('boto3')", {DYNAMIC}),
        (RULES[0], "from . import models\nimport json, re", set()),
        (RULES[1], "from temporalio import workflow\nimport activities.promotion", {"activities.promotion"}),
        (RULES[2], "from calabi.settings import Settings", {"calabi.settings", "calabi.settings.Settings"}),
        (RULES[3], "from sqlmodel import Session", {"sqlmodel", "sqlmodel.Session"}),
        (RULES[4], "import registry_store.db", {"registry_store.db"}),
        (RULES[5], "from registry_store import tables", {"registry_store.tables"}),
        (RULES[5], "from registry_store.service import RegistryService", set()),
        (RULES[6], "import registry_store.stages as stages", {"registry_store.stages"}),
    ],
)
def test_the_rules_catch_forbidden_imports(tmp_path: Path, rule: Rule, source: str, caught: set[str]) -> None:
    path = tmp_path / "module.py"
    path.write_text(source)

    assert rule.violations(path) == caught

