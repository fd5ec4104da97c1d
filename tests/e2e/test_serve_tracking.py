"""``calabi serve`` and its embedded MLflow tracking server (``--tracking``, the default, / ``--no-tracking``)."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import httpx

from tests.e2e.helpers import random_name
from tests.fixtures.servers import CALABI, free_port, start_server, stop_server


def children(pid: int) -> list[int]:
    """The direct child processes of ``pid``, whichever of its threads started them (Linux)."""
    tasks = os.listdir(f"/proc/{pid}/task")
    return [int(child) for task in tasks for child in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]


def cmdline(pid: int) -> list[str]:
    """The argv of a running process."""
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")


def test_serve_starts_and_stops_the_embedded_tracking_server(tmp_path: Path) -> None:
    server = start_server(tmp_path, embedded_tracking=True)
    assert server.tracking_port is not None
    tracking = f"http://127.0.0.1:{server.tracking_port}"
    name = random_name("exp")
    try:
        assert httpx.get(f"{tracking}/health", timeout=10).status_code == 200
        assert (server.data_dir / "mlflow" / "mlflow.db").is_file()
        assert f"MLflow tracking server on {tracking}" in (tmp_path / "server.log").read_text()
        argvs = [cmdline(pid) for pid in children(server.process.pid)]
        mlflow_argvs = [argv for argv in argvs if argv[4:7] == ["-m", "mlflow", "server"]]
        assert len(mlflow_argvs) == 1, argvs
        assert mlflow_argvs[0][1:3] == ["-m", "calabi.child_guard"]  # its uvicorn child ends with it
        assert f"sqlite:///{server.data_dir.resolve() / 'mlflow' / 'mlflow.db'}" in mlflow_argvs[0]
        # Through Calabi's gateway (/mlflow forwards the tracking routes) with the admin token.
        with server.client() as http:
            created = http.post("/mlflow/api/2.0/mlflow/experiments/create", json={"name": name})
        direct = httpx.get(f"{tracking}/api/2.0/mlflow/experiments/get-by-name",
                           params={"experiment_name": name}, timeout=10)
    finally:
        stop_server(server)
    # Stopping calabi serve stops the tracking server with it.
    try:
        after = httpx.get(f"{tracking}/health", timeout=5).status_code
    except httpx.TransportError:
        after = None
    assert after is None, f"tracking server still answers after calabi serve stopped ({after})"
    assert created.status_code == 200, f"gateway: {created.status_code} {created.text}"
    assert direct.status_code == 200, direct.text
    assert direct.json()["experiment"]["experiment_id"] == created.json()["experiment_id"]


def test_no_tracking_starts_nothing(tmp_path: Path) -> None:
    server = start_server(tmp_path)  # the fixture passes --no-tracking
    try:
        assert children(server.process.pid) == []
        assert not (server.data_dir / "mlflow").exists()
        assert "MLflow tracking server" not in (tmp_path / "server.log").read_text()
    finally:
        stop_server(server)


def serve_until_exit(tmp_path: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run ``calabi serve`` expecting it to fail before it listens (bounded)."""
    return subprocess.run(
        [str(CALABI), "serve", "--port", str(free_port()), "--data-dir", str(tmp_path / "data"),
         "--no-temporal", *args],
        env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )


def test_without_mlflow_serve_fails_with_a_hint(tmp_path: Path) -> None:
    # An `mlflow` without its server package (what mlflow-skinny alone gives) shadows the real one.
    stub = tmp_path / "stub" / "mlflow"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text("")
    env = {k: v for k, v in os.environ.items() if k != "CALABI_MLFLOW_TRACKING_URL"}
    env["PYTHONPATH"] = str(stub.parent)
    result = serve_until_exit(tmp_path, env=env)
    assert result.returncode == 1, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "mlflow" in lines[0] and "--no-tracking" in lines[0] and "CALABI_MLFLOW_TRACKING_URL" in lines[0]
    assert not (tmp_path / "data" / "mlflow").exists()


def test_tracking_port_in_use_is_refused(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "CALABI_MLFLOW_TRACKING_URL"}
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = serve_until_exit(tmp_path, "--tracking-port", str(port), env=env)
    assert result.returncode == 1, result
    assert f"tracking port {port} is in use" in result.stderr, result.stderr
