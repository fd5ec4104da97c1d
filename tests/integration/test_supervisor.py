"""``calabi.supervisor``: real child processes restarted with a log line, given up on past the cap, stopped."""

from __future__ import annotations

import subprocess
import threading
import time

import pytest

from calabi.supervisor import RestartPolicy, Supervisor

FAST = RestartPolicy(backoff_s=0.01, max_backoff_s=0.05, max_restarts=3, window_s=60, stop_timeout_s=5)


def _command(argv: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL)


def test_a_child_that_keeps_exiting_is_restarted_up_to_the_cap_then_given_up() -> None:
    lines: list[str] = []
    gave_up = threading.Event()
    supervisor = Supervisor(log=lines.append, give_up=lambda name: gave_up.set(), policy=FAST)
    with supervisor:
        supervisor.start("flaky", lambda: _command(["sh", "-c", "exit 3"]))
        assert gave_up.wait(timeout=30)
    assert [line for line in lines if "restarting" in line] == [
        f"flaky exited with code 3; restarting (restart {n})" for n in (1, 2, 3)]
    assert lines[-1] == "flaky exited with code 3; restarted 3 times within 60 s, giving up"


def test_a_killed_child_comes_back_and_stop_ends_every_child() -> None:
    lines: list[str] = []
    supervisor = Supervisor(log=lines.append, give_up=lambda name: pytest.fail(f"gave up on {name}"), policy=FAST)
    with supervisor:
        first = supervisor.start("sleeper", lambda: _command(["sleep", "600"]))
        other = supervisor.start("other", lambda: _command(["sleep", "600"]))
        first.kill()
        deadline = time.monotonic() + 30
        while (current := supervisor.current("sleeper")) is first and time.monotonic() < deadline:
            time.sleep(0.02)  # polling a condition with a deadline
        assert current is not None and current is not first and current.poll() is None
    assert current.poll() is not None and other.poll() is not None
    assert lines == ["sleeper exited with code -9; restarting (restart 1)", f"sleeper restarted (pid {current.pid})"]


def test_a_child_that_cannot_start_fails_the_start() -> None:
    def broken() -> subprocess.Popen[bytes]:
        raise TimeoutError("nothing listening")

    with Supervisor(log=print, give_up=print, policy=FAST) as supervisor, pytest.raises(TimeoutError):
        supervisor.start("broken", broken)


def test_a_failed_restart_is_retried() -> None:
    lines: list[str] = []
    starts = iter([lambda: _command(["sh", "-c", "exit 3"]), None, lambda: _command(["sleep", "600"])])

    def start() -> subprocess.Popen[bytes]:
        step = next(starts)
        if step is None:
            raise RuntimeError("port in use")
        return step()

    supervisor = Supervisor(log=lines.append, give_up=lambda name: pytest.fail(f"gave up on {name}"), policy=FAST)
    with supervisor:
        supervisor.start("flaky", start)
        deadline = time.monotonic() + 30
        while len(lines) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)  # polling a condition with a deadline
        current = supervisor.current("flaky")
        assert current is not None and current.poll() is None
    assert lines == ["flaky exited with code 3; restarting (restart 1)",
                     "flaky could not be restarted: port in use; restarting (restart 2)",
                     f"flaky restarted (pid {current.pid})"]
