"""The ``run_tests`` activity: the policy's test command against the candidate artifact.

The command runs without a shell in a scratch copy of the artifact, heartbeating while it
runs so a cancelled promotion stops it; a timeout kills its process group. A failing test
command is a failed check, never an activity failure.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from temporalio import activity
from temporalio.exceptions import CancelledError

from activities.errors import domain_errors
from policies.evidence import TestRun
from registry_store.artifacts import ArtifactStore
from workflows.models import TestsInput

__all__ = ["TestRunner"]

HEARTBEAT_EVERY_S = 2.0
OUTPUT_TAIL = 4000
_COUNTS = re.compile(r"(\d+) (passed|failed)")


class TestRunner:
    """Runs test commands against candidate artifacts."""

    __test__ = False  # not a pytest class

    def __init__(self, artifacts: ArtifactStore) -> None:
        self._artifacts = artifacts

    @activity.defn(name="run_tests")
    @domain_errors
    def run_tests(self, tests: TestsInput) -> TestRun:
        """Download the artifact, run the command, report exit code, counts and the output's tail."""
        with tempfile.TemporaryDirectory(prefix="calabi-tests-") as tmp:
            artifact_dir = Path(tmp) / "artifact"
            artifact_dir.mkdir()
            self._artifacts.download_tree(tests.storage_location, artifact_dir)
            log_path = Path(tmp) / "output.log"
            started = time.monotonic()
            with log_path.open("wb") as log:
                process = subprocess.Popen(
                    tests.rule.render_command(str(artifact_dir)), cwd=artifact_dir, stdout=log,
                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                )
                timed_out = _supervise(process, tests.rule.timeout_s)
            output = log_path.read_bytes()[-OUTPUT_TAIL:].decode(errors="replace")
        counts = {kind: int(n) for n, kind in _COUNTS.findall(output)}
        return TestRun(
            exit_code=process.returncode, passed=counts.get("passed", 0), failed=counts.get("failed", 0),
            duration_s=round(time.monotonic() - started, 3), output_tail=output, timed_out=timed_out,
        )


def _supervise(process: subprocess.Popen[bytes], timeout_s: float) -> bool:
    """Wait for the process, heartbeating; kill it on timeout or cancellation. True if it timed out."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            process.wait(timeout=min(HEARTBEAT_EVERY_S, max(deadline - time.monotonic(), 0.01)))
            return False
        except subprocess.TimeoutExpired:
            pass
        if activity.is_cancelled():
            _kill(process)
            raise CancelledError("the promotion cancelled the test run")
        if time.monotonic() >= deadline:
            _kill(process)
            return True
        activity.heartbeat()


def _kill(process: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=10)
