"""``calabi.child_guard``: a guarded command's whole tree ends with the command, with the guard's stop, and with
the guard's parent killed by SIGKILL; the guard exits as the command did."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from calabi.child_guard import descendants

DEADLINE_S = 30.0


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _until(what: str, condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {DEADLINE_S:.0f} s: {what}")
        time.sleep(0.05)  # polling a condition with a deadline


def _guarded(marker: str) -> list[str]:
    """A guard over a shell that leaves a background process (an orphan once the shell dies)."""
    return [sys.executable, "-m", "calabi.child_guard", "sh", "-c", "sleep 86397 & sleep 86396; :", marker]


def _tree_of(pid: int, size: int) -> list[int]:
    found: list[int] = []

    def grown() -> bool:
        found[:] = descendants(pid)
        return len(found) >= size

    _until(f"{size} processes below {pid}", grown)
    return found


def test_the_orphans_of_a_killed_command_end_with_it_and_the_guard_dies_by_the_same_signal() -> None:
    guard = subprocess.Popen(_guarded(f"guard-{secrets.token_hex(4)}"))
    try:
        shell, *sleeps = _tree_of(guard.pid, 3)
        os.kill(shell, signal.SIGKILL)  # the background sleep is adopted by the guard, which ends it
        assert guard.wait(timeout=DEADLINE_S) == -signal.SIGKILL
        assert not [pid for pid in sleeps if _alive(pid)]
    finally:
        guard.kill()


def test_stopping_the_guard_stops_the_tree_and_reports_the_commands_exit() -> None:
    guard = subprocess.Popen(_guarded(f"guard-{secrets.token_hex(4)}"))
    try:
        tree = _tree_of(guard.pid, 3)
        guard.terminate()
        assert guard.wait(timeout=DEADLINE_S) == -signal.SIGTERM  # sh dies of the forwarded SIGTERM
        assert not [pid for pid in tree if _alive(pid)]
    finally:
        guard.kill()


def test_the_tree_ends_when_the_guards_parent_is_killed() -> None:
    marker = f"guard-{secrets.token_hex(4)}"
    launcher = (  # a parent that starts the guard as serve does (dying with it), then waits
        "import subprocess, sys, time\n"
        "from calabi.processes import die_with_parent\n"
        f"subprocess.Popen({_guarded(marker)!r}, preexec_fn=die_with_parent)\n"
        "time.sleep(600)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", launcher])
    try:
        tree = _tree_of(parent.pid, 4)  # guard, sh, two sleeps
        parent.kill()
        parent.wait(timeout=DEADLINE_S)
        _until("every process below the killed parent has ended", lambda: not [pid for pid in tree if _alive(pid)])
    finally:
        parent.kill()
