"""The embedded MLflow tracking server behind the gateway: ``mlflow server`` on 127.0.0.1.

Experiments, runs and logged models live in SQLite in ``<data_dir>/mlflow``; run artifacts
are served by the tracking server itself (``mlflow-artifacts:/``) from a directory next to it.
``mlflow server`` runs uvicorn as a child of its own, which ``PR_SET_PDEATHSIG`` does not reach: the
server runs under ``calabi.child_guard``, so the whole tree ends with the process returned here and
with its parent. Serving and the default root are spelled out, so no ``MLFLOW_SERVE_ARTIFACTS`` or
``MLFLOW_DEFAULT_ARTIFACT_ROOT`` in the environment can point new experiments at a local path.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx

from calabi.processes import child_environment, die_with_parent

__all__ = ["START_TIMEOUT_S", "start_tracking_server", "tracking_server_command"]

START_TIMEOUT_S = 90.0


def tracking_server_command(data_dir: Path, *, port: int) -> list[str]:
    """The argv of ``mlflow server`` for the embedded default (one worker, SQLite, proxied artifacts)."""
    return [
        sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--backend-store-uri", f"sqlite:///{data_dir / 'mlflow.db'}",
        "--serve-artifacts", "--artifacts-destination", str(data_dir / "artifacts"),
        "--default-artifact-root", "mlflow-artifacts:/",
    ]


def start_tracking_server(data_dir: Path, *, port: int, log_path: Path | None = None) -> subprocess.Popen[bytes]:
    """Start the tracking server with its state in ``data_dir`` and wait until ``/health`` answers (bounded)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    log_file = log_path or data_dir / "mlflow-server.log"
    # The job runner (huey consumers) serves MLflow's GenAI jobs, not tracking; leave it off.
    env = child_environment() | {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with log_file.open("ab") as log:  # the child keeps its own descriptor
        process = subprocess.Popen(  # the guard ends mlflow's own server process (uvicorn) with it
            [sys.executable, "-m", "calabi.child_guard", *tracking_server_command(data_dir, port=port)],
            cwd=data_dir, env=env,
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, preexec_fn=die_with_parent,
        )
    url = f"http://127.0.0.1:{port}/health"
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"mlflow server exited with code {process.returncode}; see {log_file}")
            try:
                if httpx.get(url, timeout=1).status_code == 200:
                    return process
            except httpx.TransportError:
                pass
            time.sleep(0.2)  # readiness poll, bounded by the deadline above
        raise TimeoutError(f"mlflow server did not answer {url} within {START_TIMEOUT_S:.0f} s; see {log_file}")
    except BaseException:
        process.kill()
        process.wait(timeout=10)
        raise
