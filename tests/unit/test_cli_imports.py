"""The CLI's user commands and ``calabi.client`` are HTTP clients: they import no registry code."""

from __future__ import annotations

import json
import subprocess
import sys

CLIENT_MODULES = [
    "calabi.client",
    "calabi.cli.main",  # the console script: the root app with every command group (serve/worker load lazily)
    "calabi.cli.models",
    "calabi.cli.versions",
    "calabi.cli.aliases",
    "calabi.cli.tags",
    "calabi.cli.audit",
    "calabi.cli.users",
    "calabi.cli.tokens",
    "calabi.cli.login",
    "calabi.cli.promotions",
    "calabi.cli.promotion_status",
    "calabi.cli.serving_schema",
    "calabi.cli.reviews",
]
FORBIDDEN = ("registry_store", "sqlalchemy", "sqlmodel", "boto3", "botocore", "temporalio", "calabi.bootstrap",
             "calabi.engine", "calabi.api")


def test_user_commands_import_no_registry_code() -> None:
    script = (
        "import importlib, json, sys\n"
        f"for name in {CLIENT_MODULES!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    loaded = json.loads(done.stdout)
    leaked = [m for m in loaded if any(m == f or m.startswith(f"{f}.") for f in FORBIDDEN)]
    assert leaked == []
