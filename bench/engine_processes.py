"""The engine benchmark's processes: started in their own session, measured by /proc, never left behind.

Each child leads its own process group (``start_new_session``) and gets ``PR_SET_PDEATHSIG`` (see
``bench.servers``); stopping it sends SIGTERM to the group, then SIGKILL, then SIGKILL to any
descendant that left the group (a sandbox starts its own session). An ``atexit`` hook stops
whatever is still running, so an interrupted run (Ctrl-C) leaves no orphans.
"""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

from bench.servers import _die_with_parent, log_tail

__all__ = ["Child", "CpuSampler", "spawn", "stop", "stop_children"]

STOP_GRACE_S = 15.0
_TICK = os.sysconf("SC_CLK_TCK")


@dataclass
class Child:
    """A started process and where its output goes."""

    label: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        """The leader's pid (also its process group id)."""
        return self.process.pid

    def log_tail(self, chars: int = 3000) -> str:
        """The end of the child's combined stdout/stderr."""
        return log_tail(self.log_path, chars)


_CHILDREN: dict[int, Child] = {}


def spawn(label: str, command: list[str], *, log_path: Path, env: dict[str, str], cwd: Path) -> Child:
    """Start ``command`` in its own session, output to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, preexec_fn=_die_with_parent,
        )
    child = Child(label, process, log_path)
    _CHILDREN[process.pid] = child
    return child


def _stats() -> dict[int, list[str]]:
    """``/proc/<pid>/stat`` fields after the command name, by pid, for every live process."""
    found: dict[int, list[str]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            raw = Path(entry.path, "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        found[int(entry.name)] = raw[raw.rfind(")") + 2 :].split()
    return found


def _descendants(root: int, stats: dict[int, list[str]]) -> set[int]:
    """``root`` and every live process below it (by parent pid)."""
    children: dict[int, list[int]] = {}
    for pid, fields in stats.items():
        children.setdefault(int(fields[1]), []).append(pid)
    tree, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid in tree or pid not in stats:
            continue
        tree.add(pid)
        todo.extend(children.get(pid, []))
    return tree


class CpuSampler:
    """User + system CPU of process trees, sampled from /proc in a background thread.

    Sampling, not ``cutime``: a sandboxed child's CPU never reaches its parent's ``cutime`` (bwrap's
    namespace init does not hand it up), so every descendant is read while it lives, by
    ``(pid, start time)``. A process is counted up to its last sample: one that lives shorter than
    ``interval_s`` is missed, and each loses at most ``interval_s`` of CPU at its end.
    """

    def __init__(self, roots: dict[str, int], interval_s: float = 0.2) -> None:
        self._roots, self._interval = roots, interval_s
        self._seen: dict[str, dict[tuple[int, str], int]] = {name: {} for name in roots}
        self._base: dict[str, dict[tuple[int, str], int]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="cpu-sampler", daemon=True)

    def __enter__(self) -> CpuSampler:
        self._sample()
        self._base = {name: dict(seen) for name, seen in self._seen.items()}
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._sample()

    def seconds(self, name: str) -> float:
        """CPU seconds the tree ``name`` used between entering and leaving the context."""
        base = self._base.get(name, {})
        return sum(ticks - base.get(key, 0) for key, ticks in self._seen[name].items()) / _TICK

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            self._sample()

    def _sample(self) -> None:
        stats = _stats()
        for name, root in self._roots.items():
            seen = self._seen[name]
            for pid in _descendants(root, stats):
                fields = stats[pid]
                seen[(pid, fields[19])] = int(fields[11]) + int(fields[12])  # utime + stime, by (pid, start)


def stop(child: Child) -> None:
    """Stop the child's group (SIGTERM, then SIGKILL after a grace period) and any descendant that left it."""
    _CHILDREN.pop(child.pid, None)
    stats = _stats()
    strays = {pid: stats[pid][19] for pid in _descendants(child.pid, stats) - {child.pid}}  # pid: start time
    _kill_group(child.pid, signal.SIGTERM)
    try:
        child.process.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        pass
    _kill_group(child.pid, signal.SIGKILL)
    now = _stats()
    for pid, started in strays.items():
        if pid in now and now[pid][19] == started:  # still the same process, not a reused pid
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    if child.process.poll() is None:
        child.process.kill()
    child.process.wait(timeout=STOP_GRACE_S)


def _kill_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop_children() -> None:
    """Stop every child still running, newest first (idempotent)."""
    for child in reversed(list(_CHILDREN.values())):
        stop(child)


atexit.register(stop_children)
