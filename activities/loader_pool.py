"""A small pool of warm, single-use model loaders, each already running in the sandbox.

Importing mlflow and sklearn costs a loader about 3 CPU-seconds; a cold interpreter per check
made a burst of promotions miss its time budget together. So the pool keeps ``size`` loaders
started ahead of need (``_loader_child.py`` under ``activities.sandbox.spawn``: no secrets,
database, data dir, other process or network; another uid; CPU, memory and file limits). Each
waits, imports done, for ONE job and exits after it: untrusted code never shares an interpreter
with a later model. Taking a loader starts its replacement at once.

A loader's candidate directory is an empty directory of its own, bind-mounted read-only at
``CANDIDATE_DIR`` when it started; the caller fills it (``Loader.candidate``), then ``Loader.run``
writes the go line to the loader's stdin and waits, killing the sandbox's whole process tree on
timeout. ``jobs`` and ``hits`` (a loader was warm when taken) count what the pool did; each job logs
them (``model loader pool: job N warm|cold; H of N jobs found a warm loader``).
"""

from __future__ import annotations

import json
import logging
import math
import os
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from activities.sandbox import (
    SCRATCH_DIR,
    Limits,
    Sandboxed,
    SandboxLimitError,
    SandboxUnavailableError,
    share_read_only,
    spawn,
    tail,
)
from registry_store.errors import RegistryError

__all__ = ["LOAD_TIMEOUT_S", "Loader", "LoaderPool", "ModelUnloadableError"]

LOAD_TIMEOUT_S = 30.0
"""Wall-clock budget of one load, counted from the go line (the loader is warm by then)."""
STARTUP_TIMEOUT_S = 60.0
"""How long a loader taken cold may take to import mlflow and sklearn."""
_STARTUP_CPU_S = 60
_RESULT_BYTES = 16 << 20
_STDERR_TAIL = 2000
_TICK_S = 2.0
log = logging.getLogger(__name__)
_CHILD = Path(__file__).with_name("_loader_child.py")
_KILLED_BY_LIMIT = {128 + signal.SIGXCPU, 128 + signal.SIGKILL}  # bwrap's exit status for a child killed so

Tick = Callable[[], None]


class ModelUnloadableError(RegistryError):
    """The model's own code failed while it was loaded (it raised, or killed its interpreter): not retried."""

    error_code = "MODEL_UNLOADABLE"
    http_status = 422


def _no_tick() -> None:
    """The default ``tick``: nothing to report."""


class Loader:
    """One sandboxed loader process: warm once ``ready``; ``candidate`` is where its model's files go."""

    def __init__(self, *, timeout_s: float) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="calabi-loader-"))
        self.candidate = self.root / "candidate"
        self.candidate.mkdir()
        self.candidate.chmod(0o755)
        self._scratch = self.root / "scratch"
        self._timeout_s = timeout_s
        self._ready = False
        self._heard = b""
        self._stderr = (self.root / "stderr").open("wb")
        try:
            self._sandboxed: Sandboxed = spawn(
                [sys.executable, "-I", "-c", _CHILD.read_text()], candidate=self.candidate, scratch=self._scratch,
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, cwd=SCRATCH_DIR,
                limits=Limits(cpu_s=_STARTUP_CPU_S + math.ceil(timeout_s), file_bytes=_RESULT_BYTES),
            )
        except BaseException:
            self._stderr.close()
            shutil.rmtree(self.root, ignore_errors=True)
            raise

    @property
    def alive(self) -> bool:
        """Whether the process is still running (an idle loader that died is never handed out)."""
        return self._sandboxed.process.poll() is None

    def warm(self) -> bool:
        """Whether it has imported everything and waits for its job (does not block)."""
        return self._ready or self._await_ready(0.0)

    def wait_ready(self, tick: Tick = _no_tick) -> None:
        """Block until warm (``tick`` every couple of seconds); an error if it cannot start."""
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not self._await_ready(min(_TICK_S, max(deadline - time.monotonic(), 0.0))):
            tick()
            if time.monotonic() >= deadline:
                raise SandboxUnavailableError(f"the model loader did not start within {STARTUP_TIMEOUT_S:g}s")

    def run(self, tick: Tick = _no_tick) -> dict[str, Any]:
        """Hand over the job (the files are in ``candidate``), wait for the answer; the process is gone after."""
        self.wait_ready(tick)
        share_read_only(self.candidate)
        process = self._sandboxed.process
        assert process.stdin is not None
        try:
            process.stdin.write(b"go\n")
            process.stdin.close()
        except BrokenPipeError:
            pass  # it died meanwhile: the exit status below says how
        deadline = time.monotonic() + self._timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._sandboxed.kill()
                raise SandboxLimitError(f"loading the model took longer than {self._timeout_s:g}s")
            try:
                returncode = process.wait(timeout=min(_TICK_S, remaining))
                break
            except subprocess.TimeoutExpired:
                tick()
        return self._answer(returncode)

    def close(self) -> None:
        """Kill the sandbox (whatever runs in it) and remove the loader's files."""
        try:
            self._sandboxed.kill()
        finally:
            for stream in (self._sandboxed.process.stdin, self._sandboxed.process.stdout):
                if stream is not None:
                    stream.close()
            self._sandboxed.close()
            self._stderr.close()
            shutil.rmtree(self.root, ignore_errors=True)

    def _await_ready(self, timeout: float) -> bool:
        """Read the ready line if it came within ``timeout``; an exit before it is an infrastructure error."""
        if self._ready:
            return True
        stdout = self._sandboxed.process.stdout
        assert stdout is not None
        readable, _, _ = select.select([stdout], [], [], timeout)
        if not readable:
            return False
        received = os.read(stdout.fileno(), 64)
        self._heard = (self._heard + received)[-64:]
        if b"ready\n" in self._heard:
            self._ready = True
            return True
        if received:
            return False
        returncode = self._sandboxed.process.wait(timeout=STARTUP_TIMEOUT_S)  # end of file: it is exiting
        errors = self._errors()
        self._sandboxed.ensure_started(errors)
        raise SandboxUnavailableError(f"the model loader exited while starting (exit {returncode}): {errors}")

    def _answer(self, returncode: int) -> dict[str, Any]:
        """The loader's answer, or the error its exit status means."""
        errors = self._errors()
        if returncode in _KILLED_BY_LIMIT:
            raise SandboxLimitError(f"loading the model was stopped at the sandbox's CPU or memory limit: {errors}")
        written = self._result() if returncode == 0 else None
        if written is None:
            raise ModelUnloadableError(f"the model ended its loader without an answer (exit {returncode}): {errors}")
        try:
            answer: Any = json.loads(written)
        except ValueError as exc:
            raise ModelUnloadableError(f"the model loader's answer is not JSON: {exc}") from exc
        if not isinstance(answer, dict):
            raise ModelUnloadableError("the model loader's answer is not a JSON object")
        return answer

    def _result(self) -> bytes | None:
        """The answer file's bytes (bounded); None unless it is a regular file (never a link the sandbox planted)."""
        try:
            fd = os.open(self._scratch / "result.json", os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            return None
        with os.fdopen(fd, "rb") as result:
            return result.read(_RESULT_BYTES) if stat.S_ISREG(os.fstat(fd).st_mode) else None

    def _errors(self) -> str:
        self._stderr.flush()
        return tail(self.root / "stderr", _STDERR_TAIL).strip()


class LoaderPool:
    """``size`` warm loaders; ``loader()`` hands one out (starting its replacement) and disposes of it after.

    The lock guards only this process's queue of idle loaders (nothing shared with other workers).
    """

    def __init__(self, size: int, *, timeout_s: float = LOAD_TIMEOUT_S) -> None:
        self.size = size
        self.timeout_s = timeout_s
        self.jobs = 0
        self.hits = 0
        self._idle: deque[Loader] = deque()
        self._lock = threading.Lock()
        self._closed = False

    def start(self) -> None:
        """Start loaders up to ``size`` (a worker calls it at start-up; otherwise the first job does)."""
        while True:
            with self._lock:
                if self._closed or len(self._idle) >= self.size:
                    return
            loader = Loader(timeout_s=self.timeout_s)
            with self._lock:
                if self._closed or len(self._idle) >= self.size:
                    surplus = loader
                else:
                    self._idle.append(loader)
                    continue
            surplus.close()
            return

    @contextmanager
    def loader(self) -> Iterator[Loader]:
        """A loader for one model (warm if the pool had one); it is killed and removed when the block ends."""
        taken: Loader | None = None
        with self._lock:
            if self._closed:
                raise SandboxUnavailableError("the model loader pool is closed (the worker is shutting down)")
            self.jobs += 1
            while self._idle and taken is None:
                candidate = self._idle.popleft()
                if candidate.alive:
                    taken = candidate
                else:
                    candidate.close()
            warm = taken is not None and taken.warm()
            self.hits += warm
            log.info("model loader pool: job %d %s; %d of %d jobs found a warm loader", self.jobs,
                     "warm" if warm else "cold", self.hits, self.jobs)
        try:
            if taken is None:
                taken = Loader(timeout_s=self.timeout_s)
            self.start()  # the replacement starts importing while this one works
            yield taken
        finally:
            if taken is not None:
                taken.close()

    def close(self) -> None:
        """Kill every idle loader; ``loader()`` refuses from now on."""
        with self._lock:
            self._closed = True
            idle, self._idle = list(self._idle), deque()
        for loader in idle:
            loader.close()
