"""``python -m calabi.child_guard ARGV…``: run ARGV so that nothing it starts outlives it or its parent.

``PR_SET_PDEATHSIG`` reaches only a parent's direct child: ``mlflow server``, say, runs its
uvicorn as a child of its own, and that one survives when ``calabi serve`` is killed. The
guard stands between: it is a child subreaper (orphans of the command's tree become its
children), it gets SIGTERM when its parent dies (even by SIGKILL), and whenever it ends,
through SIGTERM/SIGINT or because the command exited, it ends every process left below
it (SIGTERM, then SIGKILL after ``GRACE_S``). It exits as the command did (a command killed
by signal N makes the guard die by N), so its parent sees the command's own ending.

Standard library only: it starts in a few milliseconds and holds no registry code.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from calabi.linux_process import die_with_parent, set_child_subreaper

__all__ = ["GRACE_S", "descendants", "main"]

GRACE_S = 10.0
_POLL_S = 0.2


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (``/proc/<pid>/task/*/children``, recursively; bounded by the process table)."""
    found: list[int] = []
    pending = [pid]
    seen: set[int] = set()
    while pending and len(seen) < 1 << 22:
        current = pending.pop()
        for task in _tasks(current):
            try:
                children = [int(c) for c in Path(f"/proc/{current}/task/{task}/children").read_text().split()]
            except (OSError, ValueError):
                continue
            for child in children:
                if child not in seen:
                    seen.add(child)
                    found.append(child)
                    pending.append(child)
    return found


def _tasks(pid: int) -> list[str]:
    try:
        return os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []


def _signal_all(pids: list[int], signum: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, signum)
        except (ProcessLookupError, PermissionError):
            pass


def _reap() -> None:
    """Reap every exited child (adopted orphans included) without blocking."""
    while True:
        try:
            pid, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _end_everything_below(grace_s: float) -> None:
    """SIGTERM every descendant, SIGKILL what is left after ``grace_s``; reap them all (bounded)."""
    me = os.getpid()
    _signal_all(descendants(me), signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while (left := descendants(me)) and time.monotonic() < deadline:
        _reap()
        time.sleep(_POLL_S)
    for _ in range(100):  # a tree that forks while dying needs a few rounds
        if not (left := descendants(me)):
            break
        _signal_all(left, signal.SIGKILL)
        _reap()
        time.sleep(_POLL_S)
    _reap()


def main(argv: list[str]) -> int:
    """Run ``argv`` guarded; return its exit code (or die by the signal that ended it)."""
    if not argv:
        print("usage: python -m calabi.child_guard COMMAND [ARG…]", file=sys.stderr)
        return 2
    parent = os.getppid()
    die_with_parent()
    set_child_subreaper()
    if os.getppid() != parent:  # the parent died before the death signal was armed
        return 1
    stopping = False

    def stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        try:
            os.kill(command.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass

    command = subprocess.Popen(argv, preexec_fn=die_with_parent)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, stop)
    deadline: float | None = None
    while command.poll() is None:
        if stopping and deadline is None:
            deadline = time.monotonic() + GRACE_S
        if deadline is not None and time.monotonic() > deadline:
            command.kill()
        _reap_others(command.pid)
        time.sleep(_POLL_S)
    _end_everything_below(GRACE_S)
    code = command.returncode
    if code < 0:
        if -code not in (signal.SIGKILL, signal.SIGSTOP):  # those two have no handler to reset
            signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    return code


def _reap_others(command_pid: int) -> None:
    """Reap adopted orphans that exited, never the command itself (``Popen`` reaps that one)."""
    for child in descendants(os.getpid()):
        if child == command_pid:
            continue
        try:
            os.waitpid(child, os.WNOHANG)
        except ChildProcessError:
            pass


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
