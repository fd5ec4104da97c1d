"""Keeping ``calabi serve``'s child processes (dev server, tracking server, worker) running.

Each child has a thread of its own that starts it, waits for it and, when it exits while
serve is running, logs one line (``worker exited with code -9; restarting (restart 1)``),
waits a backoff that doubles up to ``max_backoff_s`` and starts it again. More than
``max_restarts`` restarts within ``window_s`` is a fault a restart does not cure: the
supervisor logs it and calls ``give_up`` (``calabi serve`` then stops, so whatever runs it
sees the failure). ``stop()`` ends the children in reverse order of their start.

Children are started from their own thread, which lives as long as they run: ``PR_SET_PDEATHSIG``
(``calabi.linux_process.die_with_parent``) fires when the *thread* that started a child ends, so
a child started from a short-lived thread would be killed early. What a child starts itself dies
with it through its own means (the sandbox's pid namespace, ``calabi.child_guard``).
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["RestartPolicy", "Supervisor"]

StartChild = Callable[[], "subprocess.Popen[bytes]"]
"""Starts a child and returns once it is ready (raises when it cannot start)."""


@dataclass(frozen=True)
class RestartPolicy:
    """How often a child that dies is started again."""

    backoff_s: float = 1.0
    max_backoff_s: float = 30.0
    max_restarts: int = 5
    window_s: float = 300.0
    stop_timeout_s: float = 15.0

    def backoff(self, recent: int) -> float:
        """The wait before restart number ``recent`` (1-based) within the window."""
        return float(min(self.backoff_s * 2 ** max(recent - 1, 0), self.max_backoff_s))


class _Child:
    """One supervised child: its thread, its current process."""

    def __init__(self, name: str, start: StartChild, supervisor: Supervisor) -> None:
        self.name = name
        self._start = start
        self._supervisor = supervisor
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._restarts: deque[float] = deque()
        self.thread = threading.Thread(target=self._run, name=f"supervise-{name}", daemon=True)

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        """The running process (None before the first start)."""
        return self._process

    def start(self) -> subprocess.Popen[bytes]:
        """Start the thread; return the first process once it is ready (or raise its start error)."""
        self.thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error
        assert self._process is not None, "a ready child has a process"
        return self._process

    def _launch(self) -> bool:
        """Start the process (unless stopping); False when it could not start or serve is stopping."""
        try:
            process = self._start()
        except BaseException as exc:  # reported to start() the first time, logged afterwards
            self._error = exc
            return False
        with self._lock:
            self._process = process
            stopping = self._supervisor.stopping.is_set()
        if stopping:
            _stop(process, self._supervisor.policy.stop_timeout_s)
            return False
        return True

    def _run(self) -> None:
        started = self._launch()
        self._ready.set()
        while started:
            assert self._process is not None
            code = self._process.wait()
            if self._supervisor.stopping.is_set():
                return
            started = self._restart(f"{self.name} exited with code {code}")

    def _restart(self, why: str) -> bool:
        """Start the process again after a backoff, retrying failed starts; False when stopping or giving up."""
        policy = self._supervisor.policy
        while True:
            now = time.monotonic()
            self._restarts.append(now)
            while self._restarts[0] < now - policy.window_s:
                self._restarts.popleft()
            if len(self._restarts) > policy.max_restarts:
                self._supervisor.log(f"{why}; restarted {policy.max_restarts} times within {policy.window_s:.0f} s, "
                                     "giving up")
                self._supervisor.give_up(self.name)
                return False
            self._supervisor.log(f"{why}; restarting (restart {len(self._restarts)})")
            if self._supervisor.stopping.wait(policy.backoff(len(self._restarts))):
                return False
            if self._launch():
                assert self._process is not None
                self._supervisor.log(f"{self.name} restarted (pid {self._process.pid})")
                return True
            if self._supervisor.stopping.is_set():
                return False
            why = f"{self.name} could not be restarted: {self._error}"

    def stop(self) -> None:
        """Stop the process (the supervisor is already stopping, so it is not restarted) and join the thread."""
        with self._lock:
            process = self._process
        if process is not None:
            _stop(process, self._supervisor.policy.stop_timeout_s)
        self.thread.join(timeout=self._supervisor.policy.stop_timeout_s)


class Supervisor:
    """Starts named children, restarts those that die, stops them all (``stop`` or as a context manager)."""

    def __init__(self, *, log: Callable[[str], None], give_up: Callable[[str], None],
                 policy: RestartPolicy | None = None) -> None:
        self.log = log
        self.give_up = give_up
        self.policy = policy or RestartPolicy()
        self.stopping = threading.Event()
        self._children: list[_Child] = []

    def start(self, name: str, start: StartChild) -> subprocess.Popen[bytes]:
        """Start a child with ``start`` (in its own long-lived thread) and keep it running; its first process."""
        child = _Child(name, start, self)
        self._children.append(child)
        return child.start()

    def current(self, name: str) -> subprocess.Popen[bytes] | None:
        """The current process of the child called ``name``."""
        return next((child.process for child in self._children if child.name == name), None)

    def stop(self) -> None:
        """Stop every child, the last started first."""
        self.stopping.set()
        for child in reversed(self._children):
            child.stop()

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def _stop(process: subprocess.Popen[bytes], timeout_s: float) -> None:
    """SIGTERM, then SIGKILL after ``timeout_s``."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)
