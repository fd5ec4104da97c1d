"""The ``run_tests`` activity under ActivityEnvironment: real artifact store, real child processes."""

from __future__ import annotations

import os
import secrets
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from temporalio.exceptions import ApplicationError, CancelledError
from temporalio.testing import ActivityEnvironment

from activities.sandbox import CANDIDATE_DIR
from activities.test_runner import OUTPUT_TAIL, TestRunner
from policies.checklist import run_check
from policies.evidence import Evidence, VersionEvidence
from policies.models import StagePolicy, TestsRule
from registry_store.artifacts import LocalArtifactStore, tree_digest
from workflows.models import TestsInput

PY = sys.executable
SLOW = 30  # seconds a child would run if nobody killed it; the tests never wait for it


@pytest.fixture
def store(tmp_path: Path) -> LocalArtifactStore:
    return LocalArtifactStore(tmp_path / "store")


@pytest.fixture
def location(tmp_path: Path, store: LocalArtifactStore) -> str:
    """A stored artifact: an MLmodel, a data file and a script that reads it relative to its cwd."""
    source = tmp_path / "source"
    source.mkdir()
    (source / "MLmodel").write_text("flavors:\n  python_function: {}\n")
    (source / "data.txt").write_text("payload-from-the-artifact")
    (source / "check.py").write_text(
        "import os, pathlib\n"
        "print(pathlib.Path('data.txt').read_text())\n"
        "print('cwd=' + os.getcwd())\n"
        "try:\n    open('data.txt', 'w')\nexcept OSError as exc:\n    print('read-only:', exc.errno)\n"
        "print('4 passed in 0.01s')\n"
    )
    return store.put_tree(source, f"model/{secrets.token_hex(4)}")


def make_input(location: str, command: list[str], *, timeout_s: float = 60.0) -> TestsInput:
    return TestsInput(promotion_id="p1", storage_location=location,
                      rule=TestsRule(mode="command", command=command, timeout_s=timeout_s))


def alive(pid: int) -> bool:
    """Whether ``pid`` is a live (not zombie) process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def test_passing_command(store: LocalArtifactStore, location: str) -> None:
    beats: list[tuple[Any, ...]] = []
    env = ActivityEnvironment()
    env.on_heartbeat = lambda *details: beats.append(details)

    run = env.run(TestRunner(store).run_tests, make_input(location, [PY, "-c", "print('3 passed')"]))

    assert (run.exit_code, run.passed, run.failed, run.timed_out) == (0, 3, 0, False)
    assert "3 passed" in run.output_tail
    assert beats, "the runner heartbeats at least once"
    rule = TestsRule(mode="command", command=["x"])
    evidence = Evidence(model="m", target_stage="Production", candidate=VersionEvidence(version=1), test_run=run)
    assert run_check("tests", StagePolicy(tests=rule), evidence).passed


def test_command_runs_in_a_copy_of_the_artifact(store: LocalArtifactStore, location: str) -> None:
    run = ActivityEnvironment().run(TestRunner(store).run_tests, make_input(location, [PY, "{artifact_dir}/check.py"]))

    assert run.exit_code == 0 and run.passed == 4
    assert "payload-from-the-artifact" in run.output_tail
    assert f"cwd={CANDIDATE_DIR}\n" in run.output_tail, "the sandbox's view of the copy"
    assert "read-only: 30" in run.output_tail, "the copy is mounted read-only (EROFS)"
    assert (Path(location.removeprefix("file://")) / "data.txt").read_text() == "payload-from-the-artifact"


def test_failing_command_is_a_result_not_an_error(store: LocalArtifactStore, location: str) -> None:
    script = ("import sys; print('noise: 9 failed earlier'); print('== 1 passed, 2 failed, 1 error in 0.3s ==');"
              " sys.exit(1)")

    run = ActivityEnvironment().run(TestRunner(store).run_tests, make_input(location, [PY, "-c", script]))

    assert (run.exit_code, run.passed, run.failed, run.timed_out) == (1, 1, 3, False)
    evidence = Evidence(model="m", target_stage="Production", candidate=VersionEvidence(version=1), test_run=run)
    result = run_check("tests", StagePolicy(tests=TestsRule(mode="command", command=["x"])), evidence)
    assert not result.passed and "test command exited with code 1" in result.reasons


def test_unstartable_command_is_a_failed_run(store: LocalArtifactStore, location: str) -> None:
    run = ActivityEnvironment().run(TestRunner(store).run_tests, make_input(location, ["/nonexistent/pytest"]))

    assert run.exit_code == 127 and not run.timed_out
    assert "could not start '/nonexistent/pytest'" in run.output_tail


def test_stderr_is_captured_and_only_the_tail_kept(store: LocalArtifactStore, location: str) -> None:
    script = "import sys; sys.stderr.write('E' * 10000 + 'STDERR-END\\n'); print('last line')"

    run = ActivityEnvironment().run(TestRunner(store).run_tests, make_input(location, [PY, "-c", script]))

    assert len(run.output_tail) == OUTPUT_TAIL
    assert "STDERR-END" in run.output_tail and run.output_tail.rstrip().endswith("last line")


def test_timeout_kills_the_command(store: LocalArtifactStore, location: str) -> None:
    run = ActivityEnvironment().run(
        TestRunner(store, heartbeat_every_s=0.05).run_tests,
        make_input(location, [PY, "-c", f"import time; print('started', flush=True); time.sleep({SLOW})"],
                    timeout_s=0.5),
    )

    assert run.timed_out and run.exit_code == 128 + signal.SIGKILL
    assert run.duration_s < SLOW / 2
    evidence = Evidence(model="m", target_stage="Production", candidate=VersionEvidence(version=1), test_run=run)
    result = run_check("tests", StagePolicy(tests=TestsRule(mode="command", command=["x"], timeout_s=0.5)), evidence)
    assert not result.passed and "test command timed out after 0.5s" in result.reasons


def test_heartbeats_while_the_command_runs(store: LocalArtifactStore, location: str) -> None:
    beats: list[tuple[Any, ...]] = []
    env = ActivityEnvironment()
    env.on_heartbeat = lambda *details: beats.append(details)

    run = env.run(TestRunner(store, heartbeat_every_s=0.05).run_tests,
                  make_input(location, [PY, "-c", "import time; time.sleep(0.6)"]))

    assert run.exit_code == 0
    assert len(beats) >= 4, beats


def running_with(marker: str) -> list[int]:
    """The live host processes whose command line contains ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and marker.encode() in (entry / "cmdline").read_bytes() and alive(int(entry.name)):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def test_cancellation_kills_the_command_and_its_children(store: LocalArtifactStore, location: str) -> None:
    marker = f"calabi-cancel-{secrets.token_hex(4)}"
    sleeper = f"import time; time.sleep({SLOW})  # {marker}"
    script = (f"import subprocess, sys; subprocess.Popen([sys.executable, '-c', {sleeper!r}]);"
              f" print('started', flush=True); exec({sleeper!r})")
    running = threading.Event()
    env = ActivityEnvironment()
    env.on_heartbeat = lambda *_: running.set() if len(running_with(marker)) >= 2 else None

    def cancel_once_running() -> None:
        running.wait(SLOW)
        env.cancel()

    canceller = threading.Thread(target=cancel_once_running)
    canceller.start()
    try:
        with pytest.raises(CancelledError):
            env.run(TestRunner(store, heartbeat_every_s=0.05).run_tests, make_input(location, [PY, "-c", script]))
    finally:
        canceller.join()

    assert running.is_set(), "cancelled only after the command and its child were running"
    assert running_with(marker) == []


def test_background_processes_die_with_the_command(store: LocalArtifactStore, location: str) -> None:
    marker = f"calabi-background-{secrets.token_hex(4)}"
    script = (f"import subprocess, sys; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep({SLOW})',"
              f" {marker!r}], start_new_session=True); print('1 passed')")

    run = ActivityEnvironment().run(TestRunner(store).run_tests, make_input(location, [PY, "-c", script]))

    assert run.exit_code == 0 and run.passed == 1
    assert running_with(marker) == [], "nothing the candidate started outlives its run"


def test_registry_settings_do_not_reach_the_command(
    monkeypatch: pytest.MonkeyPatch, store: LocalArtifactStore, location: str
) -> None:
    monkeypatch.setenv("CALABI_DATABASE_URL", "postgresql://secret@db/registry")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3-secret")
    script = ("import os; print(sorted(k for k in os.environ if 'CALABI' in k or k.startswith('AWS_S')),"
              " 'PATH' in os.environ)")

    run = ActivityEnvironment().run(TestRunner(store).run_tests, make_input(location, [PY, "-c", script]))

    assert run.output_tail.strip() == "[] True"
    assert os.environ["CALABI_DATABASE_URL"]  # the worker's own environment is untouched


def test_missing_artifact_is_a_non_retryable_error(store: LocalArtifactStore) -> None:
    missing = (store.root / "model" / "gone").as_uri()

    with pytest.raises(ApplicationError) as raised:
        ActivityEnvironment().run(TestRunner(store).run_tests, make_input(missing, [PY, "-c", "pass"]))

    assert (raised.value.type, raised.value.non_retryable) == ("RESOURCE_DOES_NOT_EXIST", True)


def test_a_copy_matching_the_registered_digest_is_tested(store: LocalArtifactStore, location: str,
                                                          tmp_path: Path) -> None:
    copy = tmp_path / "expected"
    store.download_tree(location, copy)
    tests = make_input(location, [PY, "-c", "print('1 passed')"]).model_copy(update={"digest": tree_digest(copy)})

    run = ActivityEnvironment().run(TestRunner(store).run_tests, tests)

    assert (run.passed, run.failed) == (1, 0)


def test_an_altered_registry_copy_is_refused_before_its_tests_run(store: LocalArtifactStore, location: str,
                                                                  tmp_path: Path) -> None:
    copy = tmp_path / "expected"
    store.download_tree(location, copy)
    digest = tree_digest(copy)
    marker = tmp_path / "ran"
    next(p for p in Path(location.removeprefix("file://")).rglob("*") if p.is_file()).write_bytes(b"altered")
    tests = make_input(location, [PY, "-c", f"open({str(marker)!r}, 'w')"]).model_copy(update={"digest": digest})

    with pytest.raises(ApplicationError) as raised:
        ActivityEnvironment().run(TestRunner(store).run_tests, tests)

    assert raised.value.type == "DATA_LOSS" and raised.value.non_retryable
    assert "does not match the digest recorded at registration" in str(raised.value)
    assert not marker.exists(), "the command must not run against an altered copy"
