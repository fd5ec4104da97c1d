"""SIGKILL of ``calabi serve`` during concurrent registrations leaves nothing behind once it has restarted.

Four threads register versions (uploads through ``/api/v1`` and local sources through the MLflow
route, served by two API worker processes, which die with serve) while one upload is held
half-sent, so a partial staging directory exists when serve is killed. After the restart
(minimum orphan age 0, so the start-up sweep takes every leftover) no staging entry and no
artifact tree without a version row remain, and every acknowledged version is there with the
files it was acknowledged with.
"""

from __future__ import annotations

import io
import os
import sqlite3
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

import httpx

from calabi.child_guard import descendants
from registry_store.artifacts import tree_digest
from tests.e2e.helpers import call, create_model, ok
from tests.e2e.test_serve_supervision import alive
from tests.fixtures.servers import LiveServer, start_server, stop_server

THREADS = 4
ACKNOWLEDGED_BEFORE_KILL = 12
PAYLOAD = 1 << 20
ENV = {"CALABI_ORPHAN_MIN_AGE_S": "0"}


def _tar(payload: bytes) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in (("MLmodel", b"flavors: {}\n"), ("model.pkl", payload)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _held(body: bytes, sent_half: threading.Event, release: threading.Event) -> Iterator[bytes]:
    """``body`` in two halves, the second only once ``release`` is set (bounded)."""
    yield body[: len(body) // 2]
    sent_half.set()
    release.wait(timeout=60)
    yield body[len(body) // 2 :]


def _leftovers(data_dir: Path) -> tuple[list[str], list[str]]:
    """Staging entries, and version trees no row records."""
    root = data_dir / "artifacts"
    staging = root / ":staging"
    with sqlite3.connect(data_dir / "calabi.db") as db:
        recorded = {row[0] for row in db.execute("SELECT artifact_id FROM model_versions")}
    trees = [str(tree) for model in root.iterdir() if not model.name.startswith(":")
             for tree in model.iterdir() if tree.name not in recorded]
    return sorted(os.listdir(staging)) if staging.exists() else [], trees


def _until_gone(pids: list[int]) -> None:
    """Wait until none of ``pids`` runs (bounded): the API's worker processes die with serve."""
    deadline = time.monotonic() + 30
    while [pid for pid in pids if alive(pid)]:
        assert time.monotonic() < deadline, [pid for pid in pids if alive(pid)]
        time.sleep(0.05)  # polling a condition with a deadline


def test_registrations_killed_with_serve_leave_nothing_behind(tmp_path: Path) -> None:
    server = start_server(tmp_path, extra_env=ENV, workers=2)
    with server.client() as http:
        model = create_model(http)
    acknowledged: list[tuple[int, str]] = []  # (version, digest of what was sent)
    lock = threading.Lock()
    killed = threading.Event()

    def register(index: int) -> None:
        with server.client() as http:
            for attempt in range(1000):
                if killed.is_set():
                    return
                try:
                    if (index + attempt) % 2:
                        response = http.post(f"/api/v1/models/{model}/versions/upload",
                                             content=_tar(os.urandom(PAYLOAD)),
                                             headers={"Content-Type": "application/x-tar"})
                        assert response.status_code == 201, response.text
                        done = (int(response.json()["version"]), str(response.json()["digest"]))
                    else:
                        source = server.artifact(os.urandom(PAYLOAD))
                        body = {"name": model, "source": str(source)}
                        created = ok(call(http, "POST", "/model-versions/create", body))
                        done = (int(created["model_version"]["version"]), tree_digest(source))
                except (httpx.TransportError, AssertionError):
                    if killed.is_set():
                        return
                    raise
                with lock:
                    acknowledged.append(done)

    sent_half, release = threading.Event(), threading.Event()

    def held_upload() -> None:
        with server.client() as http:
            try:
                http.post(f"/api/v1/models/{model}/versions/upload",
                          content=_held(_tar(os.urandom(PAYLOAD)), sent_half, release),
                          headers={"Content-Type": "application/x-tar"})
            except httpx.TransportError:
                pass

    threads = [threading.Thread(target=register, args=(i,)) for i in range(THREADS)]
    threads.append(threading.Thread(target=held_upload))
    for thread in threads:
        thread.start()
    try:
        deadline = time.monotonic() + 120
        while (len(acknowledged) < ACKNOWLEDGED_BEFORE_KILL or not sent_half.is_set()) and time.monotonic() < deadline:
            time.sleep(0.05)  # polling a condition with a deadline
        assert sent_half.is_set() and len(acknowledged) >= ACKNOWLEDGED_BEFORE_KILL
        killed.set()
        api_processes = descendants(server.process.pid)
        assert len(api_processes) >= 2, "uvicorn's worker processes"
        server.process.kill()
        server.process.wait(timeout=10)
        _until_gone(api_processes)
    finally:
        killed.set()
        release.set()
        for thread in threads:
            thread.join(timeout=60)
    staging, trees = _leftovers(server.data_dir)
    assert staging, "the held upload left a partial staging directory"
    print(f"left by the kill: {len(staging)} staging entries, {len(trees)} unrecorded trees, "
          f"{len(acknowledged)} versions acknowledged")

    restarted: LiveServer = start_server(tmp_path, extra_env=ENV)
    try:
        assert _leftovers(restarted.data_dir) == ([], [])
        log = (tmp_path / "server.log").read_text()
        assert log.count("removed staging leftover") == len(staging), log
        assert log.count("removed orphaned artifact tree") == len(trees), log
        with restarted.client() as http:
            for number, digest in acknowledged:
                stored = http.get(f"/api/v1/models/{model}/versions/{number}")
                assert stored.status_code == 200, stored.text
                location = Path(unquote(urlsplit(stored.json()["storage_location"]).path))
                assert tree_digest(location) == stored.json()["digest"] == digest
    finally:
        stop_server(restarted)
