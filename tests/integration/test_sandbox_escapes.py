"""The reproduced attacks against a real registry, through the real sandbox (real processes, no mocks).

A crafted cloudpickle model (importance extraction) and a ``conftest.py`` (the policy's test
command) run the same probe: read every ``/proc/*/environ`` for ``CALABI_ADMIN_TOKEN``, read
the data dir, the SQLite database, the admin-token file and the artifact root, and connect
to a port the test listens on. Each test first runs the probe outside the sandbox, as the
registry used to, and sees it succeed: so the assertions that it finds nothing can fail.
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from temporalio.testing import ActivityEnvironment

from activities.importances import ModelImportances, model_importances
from activities.loader_pool import LoaderPool, ModelUnloadableError
from activities.test_runner import TestRunner
from policies.models import TestsRule
from registry_store.artifacts import LocalArtifactStore
from tests.integration.helpers import Registry, build_registry
from workflows.models import TestsInput

PY = sys.executable
PROBE = '''
import glob, json, os, socket
report = {"pids": [], "tokens": [], "readable": [], "connected": False}
for path in glob.glob("/proc/[0-9]*/environ"):
    report["pids"].append(int(path.split("/")[2]))
    try:
        for entry in open(path, "rb").read().split(b"\\0"):
            if entry.startswith(b"CALABI_ADMIN_TOKEN="):
                report["tokens"].append(entry.split(b"=", 1)[1].decode())
    except OSError:
        pass
for target in __TARGETS__:
    try:
        if os.path.isdir(target):
            os.listdir(target)
        else:
            open(target, "rb").read(1)
        report["readable"].append(target)
    except OSError:
        pass
try:
    socket.create_connection(("127.0.0.1", __PORT__), timeout=2).close()
    report["connected"] = True
except OSError:
    pass
REPORT = "CALABI-PROBE " + json.dumps(report)
'''


@dataclass
class Victim:
    """A bootstrapped registry, its admin token where an attacker would look, and a listener."""

    reg: Registry
    token: str
    targets: list[str]
    listener: socket.socket

    def probe(self) -> str:
        """The probe's code, aimed at this registry."""
        port = self.listener.getsockname()[1]
        return PROBE.replace("__TARGETS__", repr(self.targets)).replace("__PORT__", str(port))

    def connections(self) -> int:
        """How many connections reached the listener (each accepted and closed)."""
        count = 0
        while count < 16 and select.select([self.listener], [], [], 0)[0]:
            self.listener.accept()[0].close()
            count += 1
        return count

    def admins(self) -> list[str]:
        return sorted(u.name for u in self.reg.services.users.list_users(self.reg.admin) if "admin" in u.roles)


@pytest.fixture
def victim(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Victim]:
    """The embedded layout: data dir 0700 with calabi.db, admin-token and artifacts; a process holding the token."""
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    reg = build_registry(tmp_path, f"sqlite:///{data / 'calabi.db'}")
    token = reg.services.users.add_token(reg.admin, name="admin")
    (data / "admin-token").write_text(token + "\n")
    (data / "admin-token").chmod(0o600)
    monkeypatch.setenv("CALABI_ADMIN_TOKEN", token)  # as an operator exports it to `calabi serve`
    holder = subprocess.Popen([PY, "-c", "import time; time.sleep(120)"], env=dict(os.environ))
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    targets = [str(data), str(data / "calabi.db"), str(data / "admin-token"), reg.artifact_root]
    try:
        yield Victim(reg=reg, token=token, targets=targets, listener=listener)
    finally:
        holder.kill()
        holder.wait()
        listener.close()
        reg.services.close()


def report_in(text: str) -> dict[str, Any]:
    found = re.search(r"CALABI-PROBE (\{.*?\})", text)
    assert found, text[-2000:]
    report: dict[str, Any] = json.loads(found.group(1))
    return report


def test_the_probe_finds_everything_outside_the_sandbox(victim: Victim) -> None:
    """The attack as it was: a plain child of the worker (environment scrubbed) still gets it all."""
    done = subprocess.run([PY, "-c", victim.probe() + "print(REPORT)"], capture_output=True, text=True,
                          env={"PATH": os.environ["PATH"]}, timeout=60, check=True)

    report = report_in(done.stdout)
    assert victim.token in report["tokens"]
    assert report["readable"] == victim.targets and report["connected"]
    assert victim.connections() == 1


def load_in_sandbox(model: Path, *, timeout_s: float = 30.0) -> ModelImportances:
    """What the model at ``model`` exposes, read by a (cold) pooled loader in the sandbox."""
    pool = LoaderPool(0, timeout_s=timeout_s)
    return model_importances(pool, lambda into: shutil.copytree(model, into, dirs_exist_ok=True), tick=lambda: None)


def hostile_model(directory: Path, code: str) -> Path:
    """An MLflow sklearn model directory whose cloudpickle runs ``code`` when loaded."""
    import cloudpickle  # type: ignore[import-untyped]

    class Payload:
        def __reduce__(self) -> tuple[Any, ...]:
            return (exec, (code,))

    directory.mkdir()
    (directory / "MLmodel").write_text("artifact_path: model\nflavors:\n  sklearn:\n    pickled_model: model.pkl\n"
                                       "    serialization_format: cloudpickle\n    sklearn_version: 1.0.0\n")
    (directory / "model.pkl").write_bytes(cloudpickle.dumps(Payload()))
    return directory


def test_a_crafted_pickle_finds_nothing_to_steal(victim: Victim, tmp_path: Path) -> None:
    admins = victim.admins()
    model = hostile_model(tmp_path / "hostile", victim.probe() + "raise SystemExit(REPORT)")

    with pytest.raises(ModelUnloadableError) as raised:  # it raised while loading: never "no importances"
        load_in_sandbox(model)

    report = report_in(str(raised.value))
    assert report["pids"] and max(report["pids"]) < 10, "only the sandbox's own few processes"
    assert report["tokens"] == [] and report["readable"] == [] and not report["connected"]
    assert victim.connections() == 0 and victim.admins() == admins
    assert victim.token not in str(raised.value)


def test_a_conftest_in_the_candidate_finds_nothing_to_steal(victim: Victim, tmp_path: Path) -> None:
    source = tmp_path / "candidate"
    source.mkdir()
    (source / "conftest.py").write_text(victim.probe() + "print(REPORT, flush=True)\n")
    (source / "test_model.py").write_text("def test_loads():\n    pass\n")
    store = LocalArtifactStore(tmp_path / "store")
    location = store.put_tree(source, "model/conftest")
    rule = TestsRule(mode="command", command=[PY, "-m", "pytest", "-s", "-p", "no:cacheprovider", "{artifact_dir}"])

    run = ActivityEnvironment().run(TestRunner(store).run_tests,
                                    TestsInput(promotion_id="p1", storage_location=location, rule=rule))

    assert (run.exit_code, run.passed) == (0, 1), run.output_tail
    report = report_in(run.output_tail)
    assert report["pids"] and max(report["pids"]) < 10, "only the sandbox's own few processes"
    assert report["tokens"] == [] and report["readable"] == [] and not report["connected"]
    assert victim.connections() == 0
    assert victim.token not in run.output_tail
