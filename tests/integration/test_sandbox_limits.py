"""The sandbox's limits and its failures: errors, never verdicts (real processes, real bubblewrap)."""

from __future__ import annotations

import secrets
import signal
import sys
import time
from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.errors import to_application_error
from activities.loader_pool import ModelUnloadableError
from activities.sandbox import Limits, SandboxLimitError, SandboxUnavailableError, spawn
from activities.test_runner import TestRunner
from policies.models import TestsRule
from registry_store.artifacts import LocalArtifactStore
from tests.integration.test_activities_test_runner import running_with
from tests.integration.test_sandbox_escapes import hostile_model, load_in_sandbox
from workflows.models import TestsInput

PY = sys.executable


def run_spawned(tmp_path: Path, code: str, limits: Limits) -> tuple[int, str]:
    """Exit status and output of ``python -c code`` in the sandbox (bounded wait)."""
    (tmp_path / "empty").mkdir(exist_ok=True)
    log = tmp_path / "out.log"
    with log.open("wb") as out:
        sandboxed = spawn([PY, "-c", code], candidate=tmp_path / "empty", scratch=tmp_path / "scratch",
                          limits=limits, stdout=out, stderr=out)
        try:
            returncode = sandboxed.process.wait(timeout=60)
        finally:
            sandboxed.kill()
            sandboxed.close()
    return returncode, log.read_text()


def test_a_spinning_pickle_is_stopped_and_reported_as_an_error(tmp_path: Path) -> None:
    marker = f"calabi-spin-{secrets.token_hex(4)}"
    spin = f"import os, sys; os.execv(sys.executable, [sys.executable, '-c', 'while True: pass', {marker!r}])"
    model = hostile_model(tmp_path / "spinning", spin)
    started = time.monotonic()

    with pytest.raises(SandboxLimitError) as raised:
        load_in_sandbox(model, timeout_s=2)

    assert time.monotonic() - started < 30
    assert "took longer than 2s" in str(raised.value)
    error = to_application_error(raised.value)
    assert error is not None and (error.type, error.non_retryable) == ("RESOURCE_EXHAUSTED", False), "retried"
    assert running_with(marker) == [], "the spinning process is gone"


def test_the_cpu_limit_kills_a_spinning_process(tmp_path: Path) -> None:
    returncode, _ = run_spawned(tmp_path, "while True: pass", Limits(cpu_s=1))

    assert returncode == 128 + signal.SIGXCPU


def test_the_memory_limit_refuses_a_large_allocation(tmp_path: Path) -> None:
    returncode, output = run_spawned(tmp_path, "b = bytearray(1 << 30)", Limits(cpu_s=10, memory_bytes=512 << 20))

    assert returncode == 1 and "MemoryError" in output


def test_without_bubblewrap_a_pickle_is_never_loaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "loaded"
    model = hostile_model(tmp_path / "model", f"open({str(marker)!r}, 'w')")
    (tmp_path / "bin").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))  # a worker without bwrap

    with pytest.raises(SandboxUnavailableError) as raised:
        load_in_sandbox(model)

    assert "bubblewrap (bwrap) is not installed" in str(raised.value)
    assert not marker.exists()


def test_a_sandbox_that_cannot_start_is_a_retried_error_not_a_failed_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "bin" / "bwrap"  # bwrap refused by the host (e.g. no user namespaces)
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'bwrap: No permissions to creating new namespace' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:/usr/bin:/bin")
    source = tmp_path / "source"
    source.mkdir()
    (source / "MLmodel").write_text("flavors: {}\n")
    store = LocalArtifactStore(tmp_path / "store")
    tests = TestsInput(promotion_id="p1", storage_location=store.put_tree(source, "m/1"),
                       rule=TestsRule(mode="command", command=[PY, "-c", "print('1 passed')"]))

    with pytest.raises(ApplicationError) as raised:
        ActivityEnvironment().run(TestRunner(store).run_tests, tests)

    assert (raised.value.type, raised.value.non_retryable) == ("TEMPORARILY_UNAVAILABLE", False)
    assert "the sandbox did not start" in str(raised.value) and "No permissions" in str(raised.value)


def test_an_answer_file_linked_to_a_host_file_is_never_read(tmp_path: Path) -> None:
    """The loader's scratch directory is writable to the model: a planted symlink must not read the worker's files."""
    secret = tmp_path / "host-secret.json"
    secret.write_text('{"status": "none", "reason": "host-secret"}')
    model = hostile_model(tmp_path / "linker", f"import os; os.symlink({str(secret)!r}, '/scratch/result.json'); "
                                               "os._exit(0)")

    with pytest.raises(ModelUnloadableError) as raised:
        load_in_sandbox(model)

    assert "without an answer (exit 0)" in str(raised.value) and "host-secret" not in str(raised.value)
