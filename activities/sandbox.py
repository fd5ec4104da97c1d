"""The sandbox every candidate's code runs in: bubblewrap namespaces, another uid, resource limits.

A candidate's files (pickles, test code) are the requester's code. They run only through
``spawn``, which starts ``argv`` under ``prlimit`` (CPU seconds, address space, file size,
open files, processes) and Debian's ``bwrap`` with new pid, network, IPC, UTS and cgroup
namespaces (no other process, ``/proc/<pid>/environ`` included, and no network but a
loopback of its own) and a mount tree holding only:

* the Python installation (``sys.prefix`` and friends) and ``/usr``, read-only;
* the candidate's copy at ``CANDIDATE_DIR``, read-only;
* a scratch directory at ``SCRATCH_DIR`` (also ``HOME``) and an empty ``/tmp``, writable.

No data dir, database file, artifact root, token file, ``/etc`` or ``/root`` is there. The
environment is cleared: only ``BASE_ENV`` and ``PATH`` are set. When the
worker runs as root, bwrap does not create a user namespace (it keeps only CAP_SETUID and
CAP_SETGID) and ``setpriv`` drops to ``SANDBOX_UID`` with no capabilities and
``no_new_privs``; otherwise an unprivileged user namespace maps the caller's own uid.

Before exec'ing ``argv`` the sandbox's Python writes one byte to a pipe only the caller holds; a
run without it never started, which is an infrastructure failure (``SandboxUnavailableError``,
retried), never a result about the candidate.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from registry_store.errors import RegistryError, UnavailableError

__all__ = [
    "BASE_ENV", "CANDIDATE_DIR", "SANDBOX_UID", "SCRATCH_DIR", "Limits", "Sandboxed", "SandboxUnavailableError",
    "SandboxLimitError", "share_read_only", "spawn", "tail",
]

SANDBOX_UID = 65534
"""``nobody``: owns nothing of the registry's."""
CANDIDATE_DIR = "/candidate"
SCRATCH_DIR = "/scratch"
BASE_ENV = {
    "HOME": SCRATCH_DIR, "TMPDIR": "/tmp", "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1",
    "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
}
_LAUNCH = (  # run by the sandbox's Python: mark the start, then become argv (127 when that cannot be)
    "import os, sys\n"
    "fd = int(sys.argv[1]); os.write(fd, b'x'); os.close(fd)\n"
    "try:\n    os.execvp(sys.argv[2], sys.argv[2:])\n"
    "except OSError as exc:\n    print(f'could not start {sys.argv[2]!r}: {exc}', file=sys.stderr); os._exit(127)\n"
)
_KILL_WAIT_S = 10.0
_DROP_PRIVILEGES = [
    "setpriv", f"--reuid={SANDBOX_UID}", f"--regid={SANDBOX_UID}", "--clear-groups", "--inh-caps=-all",
    "--bounding-set=-all", "--no-new-privs", "--",
]


class SandboxUnavailableError(UnavailableError):
    """The sandbox could not be started, so the candidate's code was not run (nor loaded outside it)."""


class SandboxLimitError(RegistryError):
    """The candidate's code ran past a limit of the sandbox (time, CPU, memory): a check error, never a verdict.

    Retried: on a busy machine a load that fits its budget when alone may not.
    """

    error_code = "RESOURCE_EXHAUSTED"
    retryable = True


@dataclass(frozen=True)
class Limits:
    """Resource limits of one sandboxed run (``prlimit``); the caller also enforces a wall-clock timeout."""

    cpu_s: int
    memory_bytes: int = 4 << 30
    file_bytes: int = 256 << 20
    open_files: int = 256
    processes: int = 256

    def prlimit(self) -> list[str]:
        """The ``prlimit`` command prefix."""
        return [
            "prlimit", f"--cpu={self.cpu_s}:{self.cpu_s + 1}", f"--as={self.memory_bytes}",  # SIGXCPU, then SIGKILL
            f"--fsize={self.file_bytes}", f"--nofile={self.open_files}", f"--nproc={self.processes}", "--core=0", "--",
        ]


def _prepare(candidate: Path, scratch: Path) -> None:
    """Open the candidate's private copy to the sandbox's uid (read-only) and give it ``scratch`` (writable)."""
    scratch.mkdir(exist_ok=True)
    if os.geteuid() != 0:
        return
    os.chown(scratch, SANDBOX_UID, SANDBOX_UID)
    share_read_only(candidate)


def share_read_only(candidate: Path) -> None:
    """Make the candidate's files readable (never writable) to the sandbox's uid; also for files added later."""
    if os.geteuid() != 0:
        return
    for directory, _subdirs, files in os.walk(candidate):
        os.chmod(directory, 0o755)
        for name in files:
            path = os.path.join(directory, name)
            if not os.path.islink(path):
                os.chmod(path, os.stat(path).st_mode & 0o777 | 0o444)


def _python_roots() -> list[str]:
    """The directories of the Python installation (venv and base), outermost only."""
    roots = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix)}
    roots.add(os.path.dirname(os.path.realpath(sys.executable)))
    kept = sorted(r for r in roots if not any(r != o and r.startswith(o.rstrip("/") + "/") for o in roots))
    return [r for r in kept if r != "/usr" and not r.startswith("/usr/")]


def _mounts(candidate: Path, scratch: Path) -> list[str]:
    """bwrap's mount tree: system libraries and Python read-only, the candidate read-only, scratch writable.

    The fresh ``/tmp`` comes before the Python binds: bwrap mounts in order, so a later tmpfs would hide a
    Python installation that lives below ``/tmp`` (a CI checkout's venv, say).
    """
    args = ["--ro-bind", "/usr", "/usr"]
    for name in ("bin", "sbin", "lib", "lib32", "lib64"):
        top = Path("/") / name
        if top.is_symlink():
            args += ["--symlink", os.readlink(top), str(top)]
        elif top.is_dir():
            args += ["--ro-bind", str(top), str(top)]
    args += ["--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--tmpfs", "/tmp",
             "--perms", "1777", "--tmpfs", "/dev/shm"]
    made: set[str] = set()
    for root in _python_roots():
        for parent in reversed(Path(root).parents[:-1]):  # world-traversable parents, whatever the host's modes
            if str(parent) not in made:
                made.add(str(parent))
                args += ["--perms", "0755", "--dir", str(parent)]
        args += ["--ro-bind", root, root]
    return args + ["--ro-bind", str(candidate), CANDIDATE_DIR, "--bind", str(scratch), SCRATCH_DIR]


def _command(argv: Sequence[str], *, candidate: Path, scratch: Path, limits: Limits, cwd: str,
             started_fd: int) -> list[str]:
    """The full command line that runs ``argv`` in the sandbox."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise SandboxUnavailableError(
            "bubblewrap (bwrap) is not installed on this worker: a candidate's code (its pickles, its tests) "
            "is never loaded or run outside the sandbox, so this check could not run")
    root = os.geteuid() == 0
    isolation = ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
    if root:
        isolation += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    else:
        isolation += ["--unshare-user"]
    environment: list[str] = ["--clearenv"]
    path = os.pathsep.join([os.path.dirname(sys.executable), "/usr/local/bin", "/usr/bin", "/bin"])
    for name, value in (BASE_ENV | {"PATH": path}).items():
        environment += ["--setenv", name, value]
    return [
        *limits.prlimit(), bwrap, *isolation, "--die-with-parent", "--new-session", *environment,
        *_mounts(candidate, scratch), "--chdir", cwd, "--",
        *(_DROP_PRIVILEGES if root else []), sys.executable, "-I", "-c", _LAUNCH, str(started_fd), *argv,
    ]


class Sandboxed:
    """A command started in the sandbox: ``process``; ``ensure_started()`` once it has exited, ``kill()``."""

    def __init__(self, process: subprocess.Popen[bytes], started_fd: int) -> None:
        self.process = process
        self._started_fd = started_fd

    def ensure_started(self, output: str) -> None:
        """Raise ``SandboxUnavailableError`` (with ``output``, bwrap's complaint) unless the sandbox came up."""
        try:
            started = os.read(self._started_fd, 1) == b"x"
        except BlockingIOError:
            started = False
        if not started:
            raise SandboxUnavailableError(f"the sandbox did not start (exit {self.process.returncode}): "
                                          f"{output.strip()[-1000:]}")

    def kill(self) -> None:
        """SIGKILL the sandbox and reap bwrap: everything in the sandbox is gone when this returns.

        The sandbox's init (bwrap's child) is killed first: the kernel kills and reaps every
        process of its pid namespace before that init exits, and bwrap exits only after it.
        """
        if self.process.poll() is not None:  # exited and reaped: its pid may be someone else's by now
            return
        pid = self.process.pid
        try:
            inits = [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        except (OSError, ValueError):
            inits = []
        for target in inits or [pid]:
            try:
                os.kill(target, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        try:
            self.process.wait(timeout=_KILL_WAIT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=_KILL_WAIT_S)

    def close(self) -> None:
        """Release the start marker's pipe."""
        os.close(self._started_fd)


def spawn(argv: Sequence[str], *, candidate: Path, scratch: Path, limits: Limits, stdout: IO[bytes] | int,
          stderr: IO[bytes] | int, cwd: str = CANDIDATE_DIR, stdin: int = subprocess.DEVNULL) -> Sandboxed:
    """Start ``argv`` in the sandbox, in a session of its own; the caller waits, kills and calls ``close()``.

    ``candidate`` is bind-mounted, so files the caller adds to it later appear in the sandbox (read-only).
    """
    _prepare(candidate, scratch)
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    try:
        line = _command(argv, candidate=candidate, scratch=scratch, limits=limits, cwd=cwd, started_fd=write_end)
        process = subprocess.Popen(
            line, stdin=stdin, stdout=stdout, stderr=stderr, env={"PATH": os.environ.get("PATH", "")},
            start_new_session=True, pass_fds=(write_end,),
        )
    except OSError as exc:
        os.close(read_end)
        raise SandboxUnavailableError(f"could not start the sandbox: {exc}") from exc
    except BaseException:
        os.close(read_end)
        raise
    finally:
        os.close(write_end)
    return Sandboxed(process, read_end)


def tail(path: Path, chars: int) -> str:
    """The last ``chars`` characters of a file the sandbox wrote (undecodable bytes replaced)."""
    with path.open("rb") as handle:
        size = handle.seek(0, os.SEEK_END)
        handle.seek(max(size - chars * 4, 0))
        return handle.read().decode(errors="replace")[-chars:]
