"""``POST /api/v1/models/{name}/versions/upload`` on a live server: what it registers, what it refuses."""

from __future__ import annotations

import io
import json
import os
import secrets
import tarfile
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from registry_store.artifacts import tree_digest
from tests.e2e.helpers import assert_error
from tests.fixtures.servers import LiveServer, make_artifact

TAR = {"Content-Type": "application/x-tar"}


def archive(*members: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    """An uncompressed tar holding ``members`` (contents for regular files)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


def tar_of(directory: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(directory, arcname=".")
    return buffer.getvalue()


@pytest.fixture
def model(live_server: LiveServer) -> str:
    name = f"upload-{secrets.token_hex(4)}"
    with live_server.client() as http:
        http.post("/api/v1/models", json={"name": name}).raise_for_status()
    return name


def upload(server: LiveServer, name: str, body: bytes, token: str | None = None, **params: str) -> httpx.Response:
    with server.client(token) as http:
        return http.post(f"/api/v1/models/{name}/versions/upload", content=body, headers=TAR, params=params)


def staging_leftovers(server: LiveServer) -> list[str]:
    staging = server.data_dir / "artifacts" / ":staging"
    return os.listdir(staging) if staging.exists() else []


def test_upload_registers_the_tree_with_its_digest(live_server: LiveServer, model: str, tmp_path: Path) -> None:
    tree = make_artifact(tmp_path)
    (tree / "data").mkdir()
    (tree / "data" / "metrics.csv").write_text("auc,0.8\n")
    response = upload(live_server, model, tar_of(tree), filename="churn-model", run_id="run-9",
                      description="from a laptop", tags=json.dumps({"team": "ml"}))
    assert response.status_code == 201, response.text
    version = response.json()
    assert version["digest"] == tree_digest(tree)
    assert (version["source"], version["run_id"], version["description"], version["tags"]) == (
        "upload:churn-model", "run-9", "from a laptop", {"team": "ml"})
    assert json.loads(version["signature"])["inputs"]  # the MLmodel was read, as for any registration
    assert staging_leftovers(live_server) == []


@pytest.mark.parametrize(
    ("members", "fragment"),
    [
        ([(member("../escape.txt"), b"x")], "'..'"),
        ([(member("/etc/cron.d/evil"), b"x")], "relative"),
        ([(member("a/../../b"), b"x")], "'..'"),
        ([(member("MLmodel"), b"x"), (member("link", tarfile.SYMTYPE, "/etc/passwd"), None)], "symlink"),
        ([(member("MLmodel"), b"x"), (member("hard", tarfile.LNKTYPE, "MLmodel"), None)], "hard link"),
        ([(member("dev", tarfile.CHRTYPE), None)], "device"),
        ([(member("fifo", tarfile.FIFOTYPE), None)], "FIFO"),
        ([(member("sparse", tarfile.GNUTYPE_SPARSE), b"x")], "sparse"),
        ([(member("same"), b"1"), (member("same"), b"2")], "twice"),
        ([(member("empty-dir", tarfile.DIRTYPE), None)], "no file"),
    ],
)
def test_unsafe_archives_are_refused(
    live_server: LiveServer, model: str, members: list[tuple[tarfile.TarInfo, bytes | None]], fragment: str
) -> None:
    response = upload(live_server, model, archive(*members))
    body = assert_error(response, 400, "INVALID_PARAMETER_VALUE")
    assert fragment in body["message"]
    assert staging_leftovers(live_server) == []
    with live_server.client() as http:
        assert http.get(f"/api/v1/models/{model}/versions").json()["versions"] == []


def one_file() -> bytes:
    return archive((member("f"), b"x"))


def as_viewer(server: LiveServer, name: str) -> httpx.Response:
    return upload(server, name, one_file(), token=server.create_user(f"v-{secrets.token_hex(3)}", "viewer"))


def as_json(server: LiveServer, name: str) -> httpx.Response:
    with server.client() as http:
        return http.post(f"/api/v1/models/{name}/versions/upload", content=b"x",
                         headers={"Content-Type": "application/json"})


@pytest.mark.parametrize(
    ("send", "status", "code"),
    [
        (lambda s, m: upload(s, m, b"not a tar archive" * 100), 400, "INVALID_PARAMETER_VALUE"),
        (lambda s, m: upload(s, m, b""), 400, "INVALID_PARAMETER_VALUE"),
        (lambda s, m: upload(s, m, one_file(), filename="../x"), 400, "INVALID_PARAMETER_VALUE"),
        (lambda s, m: upload(s, m, one_file(), tags="[1]"), 400, "INVALID_PARAMETER_VALUE"),
        (lambda s, m: upload(s, "no-such-model", one_file()), 404, "RESOURCE_DOES_NOT_EXIST"),
        (lambda s, m: upload(s, m, one_file(), token="bad"), 401, "UNAUTHENTICATED"),
        (as_viewer, 403, "PERMISSION_DENIED"),
        (as_json, 400, "INVALID_PARAMETER_VALUE"),
    ],
)
def test_bad_uploads_are_4xx(
    live_server: LiveServer, model: str, send: Callable[[LiveServer, str], httpx.Response], status: int, code: str
) -> None:
    assert_error(send(live_server, model), status, code)
    assert staging_leftovers(live_server) == []
