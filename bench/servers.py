"""Start and stop the servers under test: Calabi and the real MLflow server, on 127.0.0.1.

Every server runs in its own process group (``start_new_session``) with a fresh work
directory; stopping it signals the whole group (SIGTERM, then SIGKILL after a grace
period), so uvicorn/gunicorn workers never outlive the run. Anything still running at
interpreter exit is stopped by an ``atexit`` hook, and each server's leader gets
``PR_SET_PDEATHSIG`` so it is told to stop even if the bench itself is killed.
"""

from __future__ import annotations

import atexit
import ctypes
import http.client
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

__all__ = [
    "CALABI",
    "CALABI_API_ONLY",
    "MLFLOW_ASYNCIO",
    "MLFLOW_GUNICORN",
    "MLFLOW_UVICORN",
    "RunningServer",
    "ServerSpec",
    "free_port",
    "make_source_artifact",
    "start_server",
    "stop_all",
    "stop_server",
]

HOST = "127.0.0.1"
START_TIMEOUT_S = 180.0
STOP_GRACE_S = 10.0
MLFLOW_WORKERS = 4
MLFLOW_SOURCE = "s3://bench-bucket/model"
"""What MLflow registers: it stores the string without reading it (no run_id needed)."""


@dataclass(frozen=True)
class ServerSpec:
    """One form of a server under test."""

    key: str
    label: str
    kind: Literal["calabi", "mlflow"]
    mlflow_args: tuple[str, ...] = ()
    calabi_args: tuple[str, ...] = ()


CALABI = ServerSpec("calabi", "Calabi", "calabi")
CALABI_API_ONLY = ServerSpec("calabi-api", "Calabi API replica", "calabi", calabi_args=("--no-temporal",))
"""The scale benchmark's replicas: ``calabi serve --no-temporal --no-tracking`` (the database comes from the env)."""
MLFLOW_UVICORN = ServerSpec("mlflow-uvicorn", "MLflow (uvicorn)", "mlflow")
MLFLOW_GUNICORN = ServerSpec(
    "mlflow-gunicorn", "MLflow (gunicorn)", "mlflow", ("--gunicorn-opts", "--log-level warning")
)
MLFLOW_ASYNCIO = ServerSpec(
    "mlflow-uvicorn-asyncio", "MLflow (uvicorn, --loop asyncio)", "mlflow", ("--uvicorn-opts", "--loop asyncio")
)
"""Only for the Nagle check: uvicorn's multi-worker mode on the plain asyncio loop."""


@dataclass
class RunningServer:
    """A started server: where it listens and what the client registers as a version source."""

    spec: ServerSpec
    url: str
    command: list[str]
    display_command: str
    process: subprocess.Popen[bytes]
    workdir: Path
    log_path: Path
    source: str
    token: str
    started_s: float = 0.0
    extra: dict[str, str] = field(default_factory=dict)

    def cpu_seconds(self) -> float:
        """User + system CPU of every live process in the server's process group (from /proc)."""
        pgid = self.process.pid
        tick = os.sysconf("SC_CLK_TCK")
        total = 0
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                raw = Path(entry.path, "stat").read_text()
            except OSError:
                continue  # the process has gone
            fields = raw[raw.rfind(")") + 2 :].split()
            # after "pid (comm) ": state ppid pgrp session ... utime(12th) stime(13th)
            if int(fields[2]) == pgid:
                total += int(fields[11]) + int(fields[12])
        return total / tick

    def log_tail(self, chars: int = 3000) -> str:
        """The end of the server's combined stdout/stderr."""
        return log_tail(self.log_path, chars)


_RUNNING: dict[int, RunningServer] = {}


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (bound, read, released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def make_source_artifact(root: Path) -> Path:
    """A tiny MLflow model directory (``MLmodel`` + one small file) for Calabi to copy."""
    path = root / "model"
    path.mkdir(parents=True, exist_ok=True)
    (path / "MLmodel").write_text(
        "artifact_path: model\nflavors:\n  python_function:\n    loader_module: mlflow.sklearn\n"
        'signature:\n  inputs: \'[{"type": "double", "name": "x"}]\'\n'
        '  outputs: \'[{"type": "long"}]\'\n'
    )
    (path / "model.pkl").write_bytes(secrets.token_bytes(256))
    return path


def log_tail(path: Path, chars: int = 3000) -> str:
    """The last ``chars`` characters of a child's log file ("" when it cannot be read)."""
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Ask Linux to SIGTERM the server's leader when the bench process dies."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _command(spec: ServerSpec, port: int, workdir: Path, calabi_workers: int, data_dir: Path | None = None
             ) -> tuple[list[str], str]:
    """The argv to run and the command as a reader would type it."""
    if spec.kind == "calabi":
        calabi = Path(sys.executable).parent / "calabi"
        args = [
            "serve",
            "--host",
            HOST,
            "--port",
            str(port),
            "--data-dir",
            str(data_dir or workdir / "data"),
            "--workers",
            str(calabi_workers),
            "--no-tracking",
            *spec.calabi_args,
        ]
        return [str(calabi), *args], "calabi " + " ".join(args)
    args = [
        "server",
        "--host",
        HOST,
        "--port",
        str(port),
        "--workers",
        str(MLFLOW_WORKERS),
        "--backend-store-uri",
        f"sqlite:///{workdir / 'mlflow.db'}",
        "--default-artifact-root",
        str(workdir / "mlartifacts"),
        *spec.mlflow_args,
    ]
    shown = [f'"{a}"' if " " in a else a for a in args]
    return [sys.executable, "-m", "mlflow", *args], "mlflow " + " ".join(shown)


def _healthy(port: int) -> bool:
    conn = http.client.HTTPConnection(HOST, port, timeout=2)
    try:
        conn.request("GET", "/health")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def start_server(spec: ServerSpec, workdir: Path, *, token: str, calabi_workers: int = 1,
                 data_dir: Path | None = None, env_extra: dict[str, str] | None = None) -> RunningServer:
    """Start ``spec`` in ``workdir`` on a free port; return once ``/health`` answers 200 (bounded).

    Calabi's data dir is ``workdir/data`` unless ``data_dir`` (replicas share one); ``env_extra`` is added
    to its environment (e.g. ``CALABI_DATABASE_URL``).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    command, display = _command(spec, port, workdir, calabi_workers, data_dir)
    env = {**os.environ, **(env_extra or {})}
    if spec.kind == "calabi":
        sources = workdir / "sources"
        source = str(make_source_artifact(sources))
        env["CALABI_ADMIN_TOKEN"] = token
        env["CALABI_LOCAL_SOURCE_ROOTS"] = str(sources)
    else:
        source = MLFLOW_SOURCE
        # The job runner and its huey consumers are not part of the registry; leaving them
        # off gives MLflow the whole machine for the registry API.
        env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    log_path = workdir / "server.log"
    started = time.perf_counter()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            cwd=workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
    server = RunningServer(spec, f"http://{HOST}:{port}", command, display, process, workdir, log_path, source, token)
    _RUNNING[process.pid] = server
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            stop_server(server)
            raise RuntimeError(f"{spec.label} exited with {process.returncode}:\n{server.log_tail()}")
        if _healthy(port):
            server.started_s = time.perf_counter() - started
            return server
        time.sleep(0.25)  # readiness poll, bounded by the deadline above
    stop_server(server)
    raise RuntimeError(f"{spec.label} did not answer /health within {START_TIMEOUT_S:.0f}s:\n{server.log_tail()}")


def _signal_group(pgid: int, sig: signal.Signals) -> bool:
    """Send ``sig`` to the process group; False once the group is gone."""
    try:
        os.killpg(pgid, sig)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return False


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def stop_server(server: RunningServer) -> None:
    """Stop the server's whole process group: SIGTERM, then SIGKILL after a grace period."""
    pgid = server.process.pid  # start_new_session: the leader's pid is the group id
    _RUNNING.pop(pgid, None)
    if _signal_group(pgid, signal.SIGTERM):
        deadline = time.monotonic() + STOP_GRACE_S
        while time.monotonic() < deadline and _group_alive(pgid):
            if server.process.poll() is None:
                try:
                    server.process.wait(timeout=0.2)
                except subprocess.TimeoutExpired:
                    pass
            else:
                time.sleep(0.2)  # waiting for the workers of an exited leader, bounded
        _signal_group(pgid, signal.SIGKILL)
    try:
        server.process.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        server.process.kill()


def stop_all() -> None:
    """Stop every server still running (idempotent)."""
    for server in list(_RUNNING.values()):
        stop_server(server)


atexit.register(stop_all)
