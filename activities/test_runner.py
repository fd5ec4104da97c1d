"""The ``run_tests`` activity: the policy's test command against the candidate artifact.

The artifact is downloaded into a private copy; ``rule.command`` (an argv list, every
``{artifact_dir}`` replaced by ``activities.sandbox.CANDIDATE_DIR``, where that copy appears
read-only) runs there without a shell, in the sandbox (``activities.sandbox``: no secrets,
database, data dir, other process or network), with stdout and stderr captured together.
The activity heartbeats while downloading and every ``heartbeat_every_s`` while the command
runs, so the workflow's heartbeat timeout notices a dead worker and a cancellation reaches
it. On ``rule.timeout_s`` the sandbox is killed and the run reported ``timed_out``; on
cancellation it is killed and ``CancelledError`` propagates. Nothing the command started
outlives it: its processes die with the sandbox's pid namespace.

A failing, crashing or unstartable command is a failed *check*, never an activity failure:
the result carries the exit code (127: it could not be started; 128 + N: killed by signal N,
e.g. SIGKILL on timeout), the pytest-style counts of the summary line (``N passed``,
``M failed``; errors count as failed) and the last ``OUTPUT_TAIL`` characters of the output.
A sandbox that cannot start is an infrastructure failure (``SandboxUnavailableError``, retried).
"""

from __future__ import annotations

import math
import re
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from temporalio import activity
from temporalio.exceptions import CancelledError

from activities.errors import domain_errors
from activities.sandbox import CANDIDATE_DIR, Limits, Sandboxed, spawn, tail
from policies.evidence import TestRun
from registry_store.artifacts import ArtifactStore, tree_digest
from registry_store.errors import ArtifactIntegrityError
from workflows.models import TestsInput

__all__ = ["HEARTBEAT_EVERY_S", "OUTPUT_TAIL", "TestRunner", "parse_counts"]

HEARTBEAT_EVERY_S = 2.0
OUTPUT_TAIL = 4000
_COUNT = re.compile(r"\b(\d+) (passed|failed|errors?)\b")


def parse_counts(output: str) -> tuple[int, int]:
    """``(passed, failed)`` from the last line that reports pytest-style counts (errors count as failed)."""
    for line in reversed(output.splitlines()):
        found = _COUNT.findall(line)
        if found:
            counts: dict[str, int] = {}
            for number, kind in found:
                key = "passed" if kind == "passed" else "failed"
                counts[key] = counts.get(key, 0) + int(number)
            return counts.get("passed", 0), counts.get("failed", 0)
    return 0, 0


def _check_digest(artifact_dir: Path, tests: TestsInput) -> None:
    """Refuse to test a registry copy that differs from what was registered."""
    if tests.digest and (found := tree_digest(artifact_dir)) != tests.digest:
        raise ArtifactIntegrityError(
            f"The registry's copy at {tests.storage_location} does not match the digest recorded at registration "
            f"({tests.digest}, found {found}); it was not tested"
        )


class TestRunner:
    """Runs test commands against candidate artifacts."""

    __test__ = False  # not a pytest class

    def __init__(self, artifacts: ArtifactStore, *, heartbeat_every_s: float = HEARTBEAT_EVERY_S) -> None:
        self._artifacts = artifacts
        self._heartbeat_every_s = heartbeat_every_s

    @activity.defn(name="run_tests")
    @domain_errors
    def run_tests(self, tests: TestsInput) -> TestRun:
        """Download the artifact, run the command, report exit code, counts and the output's tail."""
        rule = tests.rule
        with tempfile.TemporaryDirectory(prefix="calabi-tests-") as tmp:
            artifact_dir = Path(tmp) / "artifact"
            artifact_dir.mkdir()
            activity.heartbeat()
            self._artifacts.download_tree(tests.storage_location, artifact_dir, self._download_progress())
            _check_digest(artifact_dir, tests)
            argv = rule.render_command(CANDIDATE_DIR)
            log_path = Path(tmp) / "output.log"
            started = time.monotonic()
            with log_path.open("wb") as log:
                with activity.shield_thread_cancel_exception():  # never leave a started sandbox unowned
                    sandboxed = spawn(argv, candidate=artifact_dir, scratch=Path(tmp) / "scratch", stdout=log,
                                      stderr=subprocess.STDOUT, limits=Limits(cpu_s=math.ceil(rule.timeout_s) + 1))
                try:
                    timed_out = self._supervise(sandboxed, rule.timeout_s, started)
                    output = tail(log_path, OUTPUT_TAIL)
                    if not timed_out:
                        sandboxed.ensure_started(output)
                except BaseException:  # cancellation (raised into this thread) or anything else: no orphans
                    with activity.shield_thread_cancel_exception():
                        sandboxed.kill()
                    raise
                finally:
                    sandboxed.close()
        process = sandboxed.process
        passed, failed = parse_counts(output)
        return TestRun(
            exit_code=process.returncode, passed=passed, failed=failed, duration_s=_since(started),
            output_tail=output, timed_out=timed_out,
        )

    def _supervise(self, sandboxed: Sandboxed, timeout_s: float, started: float) -> bool:
        """Wait for the sandbox, heartbeating; kill it on timeout (cancellation raises). True if it timed out."""
        process = sandboxed.process
        deadline = started + timeout_s
        while True:
            activity.heartbeat()
            if activity.is_cancelled():
                raise CancelledError("the test run was cancelled")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                sandboxed.kill()
                return True
            try:
                process.wait(timeout=min(self._heartbeat_every_s, remaining))
            except subprocess.TimeoutExpired:
                continue
            return False  # whatever the command left running died with the sandbox's pid namespace

    def _download_progress(self) -> Callable[[int], None]:
        """A download progress callback that heartbeats at most every ``heartbeat_every_s``."""
        last = time.monotonic()

        def progress(_written: int) -> None:
            nonlocal last
            now = time.monotonic()
            if now - last >= self._heartbeat_every_s:
                last = now
                activity.heartbeat()

        return progress


def _since(started: float) -> float:
    return round(max(time.monotonic() - started, 0.0), 3)
