"""The ``run_tests`` activity: the policy's test command against the candidate artifact.

The artifact is downloaded into a scratch directory; ``rule.command`` (an argv list, every
``{artifact_dir}`` replaced by that directory) runs there without a shell, in a process
group of its own, with stdout and stderr captured together. The activity heartbeats while
downloading and every ``heartbeat_every_s`` while the command runs, so the workflow's
heartbeat timeout notices a dead worker and a cancellation reaches it. On
``rule.timeout_s`` the process group is killed and the run reported ``timed_out``; on
cancellation it is killed and ``CancelledError`` propagates.

A failing, crashing or unstartable command is a failed *check*, never an activity failure:
the result carries the exit code (negative: killed by that signal; ``None``: it never
started), the pytest-style counts of the summary line (``N passed``, ``M failed``; errors
count as failed) and the last ``OUTPUT_TAIL`` characters of the output.

The command runs with the worker's environment minus the registry's own settings and
credentials (``CALABI_*``, ``AWS_*`` and the variables in ``SCRUBBED_ENV``): it executes code shipped
with the candidate, which must not reach the registry's database or artifact store.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from temporalio import activity
from temporalio.exceptions import CancelledError

from activities.errors import domain_errors
from policies.evidence import TestRun
from registry_store.artifacts import ArtifactStore, tree_digest
from registry_store.errors import ArtifactIntegrityError
from workflows.models import TestsInput

__all__ = ["HEARTBEAT_EVERY_S", "OUTPUT_TAIL", "SCRUBBED_ENV", "TestRunner", "parse_counts"]

HEARTBEAT_EVERY_S = 2.0
OUTPUT_TAIL = 4000
SCRUBBED_ENV = frozenset({"MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_PASSWORD", "TEMPORAL_API_KEY"})
SCRUBBED_PREFIXES = ("CALABI_", "AWS_")
"""Every registry setting and every AWS variable (keys, session tokens, credential files, profiles) ..."""
KEPT_ENV = frozenset({"AWS_REGION", "AWS_DEFAULT_REGION"})
"""... except the region, which grants nothing."""
_COUNT = re.compile(r"\b(\d+) (passed|failed|errors?)\b")
_KILL_WAIT_S = 10.0


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


def command_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` without the registry's settings and credentials."""
    return {k: v for k, v in environ.items() if not _scrubbed(k.upper())}


def _scrubbed(name: str) -> bool:
    return (name.startswith(SCRUBBED_PREFIXES) and name not in KEPT_ENV) or name in SCRUBBED_ENV


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
            argv = rule.render_command(str(artifact_dir))
            log_path = Path(tmp) / "output.log"
            started = time.monotonic()
            with log_path.open("wb") as log:
                process: subprocess.Popen[bytes] | None = None
                try:
                    try:
                        with activity.shield_thread_cancel_exception():  # never leave a started child unowned
                            process = subprocess.Popen(
                                argv, cwd=artifact_dir, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True,
                                env=command_environment(os.environ),
                            )
                    except OSError as exc:
                        return TestRun(exit_code=None, duration_s=_since(started),
                                       output_tail=f"could not start {argv[0]!r}: {exc}"[-OUTPUT_TAIL:])
                    timed_out = self._supervise(process, rule.timeout_s, started)
                except BaseException:  # cancellation (raised into this thread) or anything else: no orphans
                    if process is not None:
                        with activity.shield_thread_cancel_exception():
                            _kill(process)
                    raise
            output = _tail(log_path)
        passed, failed = parse_counts(output)
        return TestRun(
            exit_code=process.returncode, passed=passed, failed=failed, duration_s=_since(started),
            output_tail=output, timed_out=timed_out,
        )

    def _supervise(self, process: subprocess.Popen[bytes], timeout_s: float, started: float) -> bool:
        """Wait for the process, heartbeating; kill it on timeout or cancellation. True if it timed out."""
        deadline = started + timeout_s
        while True:
            activity.heartbeat()
            if activity.is_cancelled():
                raise CancelledError("the test run was cancelled")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                _kill(process)
                return True
            try:
                process.wait(timeout=min(self._heartbeat_every_s, remaining))
            except subprocess.TimeoutExpired:
                continue
            _kill_group(process.pid)  # whatever the command left running in the background
            return False

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


def _kill(process: subprocess.Popen[bytes]) -> None:
    """Kill the command's whole process group and reap it."""
    _kill_group(process.pid)
    try:
        process.wait(timeout=_KILL_WAIT_S)
    except subprocess.TimeoutExpired:
        process.kill()


def _kill_group(pgid: int) -> None:
    """SIGKILL a process group (the command runs in a session of its own, so its pid is the group id)."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _tail(path: Path) -> str:
    """The last ``OUTPUT_TAIL`` characters of a log file (undecodable bytes replaced)."""
    with path.open("rb") as handle:
        size = handle.seek(0, os.SEEK_END)
        handle.seek(max(size - OUTPUT_TAIL * 4, 0))
        return handle.read().decode(errors="replace")[-OUTPUT_TAIL:]


def _since(started: float) -> float:
    return round(max(time.monotonic() - started, 0.0), 3)
