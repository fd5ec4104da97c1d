"""``calabi serve`` keeps its children running and leaves no process behind, even when killed with SIGKILL.

One server (dev server and worker) for several scenarios in order: a policy's test command
that leaves background processes dies with a worker killed by SIGKILL; the worker comes back
and runs the next test command; a killed dev server comes back on the same state and the worker
polls it again; after SIGKILL of ``serve`` itself no process of its tree survives. (The tracking
server's own child, which ``PR_SET_PDEATHSIG`` does not reach, is ``tests/integration/test_child_guard.py``'s.)
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError

import policies
from calabi.child_guard import descendants
from tests.e2e.helpers import create_model, create_version
from tests.fixtures.servers import LiveServer, start_server, stop_server

DEADLINE_S = 60.0
POLL_S = 0.2


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead and waiting to be reaped, does not count)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _with_marker(marker: str) -> list[int]:
    """Every live process whose command line holds ``marker``."""
    pids = [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]
    return [pid for pid in pids if pid != os.getpid() and marker in _cmdline(pid) and alive(pid)]


def _child(server: LiveServer, needle: str) -> int | None:
    """The live direct child of ``serve`` whose command line holds ``needle``."""
    pid = server.process.pid
    children: list[int] = []
    for task in os.listdir(f"/proc/{pid}/task"):  # a child belongs to the thread that started it
        try:
            children += [int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
        except OSError:
            continue
    return next((c for c in children if needle in _cmdline(c) and alive(c)), None)


def _until(what: str, condition: Callable[[], object], timeout_s: float = DEADLINE_S) -> object:
    """Poll ``condition`` until it is truthy (bounded); its value."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(POLL_S)  # polling a condition with a deadline
    pytest.fail(f"not within {timeout_s:.0f} s: {what}")


def _policy_dir(root: Path, model: str, marker: str) -> Path:
    """The packaged policy, and for ``model`` a Staging test command that starts background processes."""
    directory = root / "policy"
    (directory / "models").mkdir(parents=True)
    shutil.copy(Path(policies.__file__).parent / "default.toml", directory / "default.toml")
    (directory / "models" / f"{model}.toml").write_text(
        "[staging.tests]\nmode = \"command\"\ntimeout_s = 600\n"
        f"command = [\"sh\", \"-c\", \"sleep 86399 & sleep 86398 & wait\", \"{marker}\"]\n"
    )
    return directory


def _promote(http: httpx.Client, model: str, version: int) -> str:
    response = http.post("/api/v1/promotions", json={
        "model": model, "version": version, "target_stage": "Staging", "justification": "supervision test"})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def _sandboxed(marker: str) -> list[int]:
    """The test command's shell and its background sleeps (their argv hold no marker, so count those too)."""
    shells = _with_marker(marker)
    return shells + [pid for shell in shells for pid in descendants(shell) if alive(pid)]


async def _workflows_running(port: int, workflow_ids: list[str]) -> bool:
    """Whether the dev server on ``port`` knows each workflow as running (its state survived a restart)."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        try:
            client = await Client.connect(f"127.0.0.1:{port}")
            described = [await client.get_workflow_handle(wid).describe() for wid in workflow_ids]
            return all(d.status == WorkflowExecutionStatus.RUNNING for d in described)
        except (RPCError, RuntimeError):  # the restarted server is still coming up (connect refused, or not ready)
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(POLL_S)  # polling a condition with a deadline


def test_serve_restarts_children_and_leaves_no_process_behind(tmp_path: Path) -> None:
    model, marker = f"supervised-{secrets.token_hex(4)}", f"calabi-marker-{secrets.token_hex(6)}"
    server = start_server(tmp_path, temporal=True,
                          extra_env={"CALABI_POLICY_DIR": str(_policy_dir(tmp_path, model, marker))})
    log = tmp_path / "server.log"
    try:
        with server.client() as http:
            create_model(http, model)
            for _ in range(3):
                create_version(http, server, model)
            _promote(http, model, 1)
            _until("the first test command runs", lambda: len(_sandboxed(marker)) >= 3)
            first = _sandboxed(marker)

            # A worker killed during a test command: the command and its background processes die with it.
            worker = _child(server, "-m worker")
            assert worker is not None
            os.kill(worker, signal.SIGKILL)
            _until("the test command's processes die with the worker",
                   lambda: not any(alive(pid) for pid in first), timeout_s=15)
            # ... and serve starts a new worker, which polls: the next promotion's test command runs.
            _until("a new worker", lambda: (pid := _child(server, "-m worker")) is not None and pid != worker)
            assert "worker exited with code -9; restarting (restart 1)" in log.read_text()
            _promote(http, model, 2)
            _until("the new worker runs a test command", lambda: set(_sandboxed(marker)) - set(first))

            # A killed dev server comes back on its own database: promotions started before are still there.
            dev = _child(server, "start-dev")
            assert dev is not None
            os.kill(dev, signal.SIGKILL)
            _until("a new dev server", lambda: (pid := _child(server, "start-dev")) is not None and pid != dev)
            assert "Temporal dev server exited with code -9; restarting (restart 1)" in log.read_text()
            address = re.search(r"Temporal dev server on 127\.0\.0\.1:(\d+)", log.read_text())
            assert address is not None
            assert asyncio.run(_workflows_running(int(address[1]), [f"promotion-{model}-{n}-Staging" for n in (1, 2)]))
            before = set(_sandboxed(marker))
            _promote(http, model, 3)  # the worker polls the restarted dev server
            _until("a test command runs after the dev server's restart", lambda: set(_sandboxed(marker)) - before)

        # SIGKILL of serve: nothing it started survives (dev server, worker, the test commands in their sandboxes).
        tree = descendants(server.process.pid)
        assert len(tree) >= 5, [_cmdline(pid) for pid in tree]
        server.process.kill()
        server.process.wait(timeout=10)
        _until("every process serve started has ended", lambda: not [p for p in tree if alive(p)], timeout_s=30)
    finally:
        if server.process.poll() is None:
            stop_server(server)
