"""Registry copies read back through RegistryService (local and S3 stores, SQLite and PostgreSQL): listings,
verified file reads, tampering, versions registered before per-file digests, traversal and unknown ids."""

from __future__ import annotations

import secrets
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import boto3
import pytest

from registry_store.artifact_service import ArtifactEntry
from registry_store.audit import Actor
from registry_store.entities import ModelVersion
from registry_store.errors import ArtifactIntegrityError, RegistryError
from tests.integration.helpers import Registry, build_registry

MODEL = "churn-predictor"
FILES = {
    "MLmodel": b"artifact_path: model\nflavors:\n  python_function:\n    loader_module: mlflow.sklearn\n",
    "model.pkl": b"\x80\x04original weights",
    "sub/weights.bin": secrets.token_bytes(300),
    "sub/deeper/notes.txt": b"trained on 2026-01..2026-06",
}


@dataclass
class Store:
    """Writes straight into the registry's artifact store, as a broken disk or an attacker would."""

    write: Callable[[str, str, bytes], None]
    remove: Callable[[str, str], None]


@dataclass
class World:
    reg: Registry
    store: Store


def _local_store() -> Store:
    def path(location: str, rel: str) -> Path:
        return Path(unquote(urlsplit(location).path), rel)

    def write(location: str, rel: str, data: bytes) -> None:
        path(location, rel).parent.mkdir(parents=True, exist_ok=True)
        path(location, rel).write_bytes(data)

    return Store(write, lambda location, rel: path(location, rel).unlink())


def _s3_store(endpoint: str) -> Store:
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")

    def key(location: str, rel: str) -> tuple[str, str]:
        bucket, _, prefix = location.removeprefix("s3://").partition("/")
        return bucket, f"{prefix}/{rel}"

    def write(location: str, rel: str, data: bytes) -> None:
        bucket, name = key(location, rel)
        client.put_object(Bucket=bucket, Key=name, Body=data)

    def remove(location: str, rel: str) -> None:
        bucket, name = key(location, rel)
        client.delete_object(Bucket=bucket, Key=name)

    return Store(write, remove)


@pytest.fixture(params=["sqlite-local", "sqlite-s3", pytest.param("postgres-local", marks=pytest.mark.postgres)])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    database, artifacts = request.param.split("-")
    url = request.getfixturevalue("postgres_url") if database == "postgres" else f"sqlite:///{tmp_path / 'r.db'}"
    if artifacts == "s3":
        endpoint: str = request.getfixturevalue("s3_endpoint")
        bucket: str = request.getfixturevalue("s3_bucket")
        reg = build_registry(tmp_path, url, artifact_root=f"s3://{bucket}/registry", s3_endpoint_url=endpoint)
        store = _s3_store(endpoint)
    else:
        reg = build_registry(tmp_path, url)
        store = _local_store()
    reg.model(MODEL)
    yield World(reg, store)
    reg.services.close()


def register(reg: Registry, files: dict[str, bytes] | None = None) -> ModelVersion:
    source = reg.source_root / f"model-{secrets.token_hex(4)}"
    for rel, data in (files or FILES).items():
        (source / rel).parent.mkdir(parents=True, exist_ok=True)
        (source / rel).write_bytes(data)
    return reg.svc.registration.create_model_version(reg.engineer, name=MODEL, source=str(source))


def read(world: World, mv: ModelVersion, rel: str) -> bytes:
    verified = world.reg.svc.artifacts.open_registry_artifact(world.reg.viewer, mv.artifact_id, rel)
    try:
        data = verified.stream.read()
    finally:
        verified.close()
    assert verified.size == len(data)
    return data


def refused(call: Callable[[], Any]) -> RegistryError:
    with pytest.raises(RegistryError) as info:
        call()
    return info.value


def forget_file_digests(reg: Registry, mv: ModelVersion) -> None:
    """Make the row look like one registered before migration 0005 (no per-file manifest)."""
    assert reg.execute("UPDATE model_versions SET file_digests = '' WHERE artifact_id = :a", a=mv.artifact_id) == 1


# ------------------------------------------------------------------------------------------------ reading


def test_the_download_uri_names_the_copy_in_the_calabi_registry_namespace(world: World) -> None:
    mv = register(world.reg)
    assert mv.artifact_id and mv.storage_location.rstrip("/").endswith(f"/{mv.artifact_id}")
    uri = world.reg.svc.versions.get_download_uri(world.reg.viewer, name=MODEL, version=1)
    assert uri == f"mlflow-artifacts:/calabi-registry/{mv.artifact_id}"


def test_listing_shows_the_copy_one_directory_level_at_a_time(world: World) -> None:
    mv = register(world.reg)
    svc, viewer = world.reg.svc, world.reg.viewer
    assert svc.artifacts.list_registry_artifacts(viewer, mv.artifact_id, "") == [
        ArtifactEntry("MLmodel", False, len(FILES["MLmodel"])),
        ArtifactEntry("model.pkl", False, len(FILES["model.pkl"])),
        ArtifactEntry("sub", True),
    ]
    assert svc.artifacts.list_registry_artifacts(viewer, mv.artifact_id, "sub") == [
        ArtifactEntry("deeper", True), ArtifactEntry("weights.bin", False, 300),
    ]
    assert svc.artifacts.list_registry_artifacts(viewer, mv.artifact_id, "sub/deeper") == [
        ArtifactEntry("notes.txt", False, len(FILES["sub/deeper/notes.txt"]))
    ]
    # MLflow's rule: a file or an unknown path lists as empty (the client then downloads it as a file).
    assert svc.artifacts.list_registry_artifacts(viewer, mv.artifact_id, "model.pkl") == []
    assert svc.artifacts.list_registry_artifacts(viewer, mv.artifact_id, "nosuch") == []


def test_every_file_reads_back_with_the_registered_bytes(world: World) -> None:
    mv = register(world.reg)
    assert {rel: read(world, mv, rel) for rel in FILES} == FILES


def test_a_large_file_is_spooled_in_chunks_not_held_in_memory(world: World) -> None:
    size = 24 * 1024 * 1024
    mv = register(world.reg, {"MLmodel": FILES["MLmodel"], "model.pkl": secrets.token_bytes(size)})
    tracemalloc.start()
    try:
        verified = world.reg.svc.artifacts.open_registry_artifact(world.reg.viewer, mv.artifact_id, "model.pkl")
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    try:
        assert verified.size == size
        assert peak < size // 4, f"opening a {size}-byte file allocated {peak} bytes at its peak"
    finally:
        verified.close()


def test_reading_copies_needs_the_viewer_role(world: World) -> None:
    mv = register(world.reg)
    nobody = Actor(name="nobody", roles=frozenset())
    assert refused(lambda: world.reg.svc.artifacts.list_registry_artifacts(nobody, mv.artifact_id,
                                                                           "")).http_status == 403
    assert refused(lambda: world.reg.svc.artifacts.open_registry_artifact(nobody, mv.artifact_id,
                                                                          "MLmodel")).http_status == 403


# ------------------------------------------------------------------------------------------------ integrity


def assert_data_loss(error: RegistryError, version: int, detail: str) -> None:
    assert isinstance(error, ArtifactIntegrityError), error
    assert (error.error_code, error.http_status) == ("DATA_LOSS", 409)
    assert f"Model '{MODEL}' version {version}" in error.message, error.message
    assert "does not match the digest recorded at registration" in error.message, error.message
    assert detail in error.message, error.message


def test_a_tampered_file_is_refused_while_untouched_files_still_read(world: World) -> None:
    mv = register(world.reg)
    world.store.write(mv.storage_location, "model.pkl", b"\x80\x04evil weights")
    error = refused(lambda: read(world, mv, "model.pkl"))
    assert_data_loss(error, 1, "file 'model.pkl' has sha256")
    assert read(world, mv, "MLmodel") == FILES["MLmodel"]


def test_a_missing_file_is_refused_by_listing_and_by_reading(world: World) -> None:
    mv = register(world.reg)
    world.store.remove(mv.storage_location, "sub/weights.bin")
    assert_data_loss(refused(lambda: world.reg.svc.artifacts.list_registry_artifacts(world.reg.viewer, mv.artifact_id,
                                                                                     "")),
                     1, "missing ['sub/weights.bin']")
    assert_data_loss(refused(lambda: read(world, mv, "sub/weights.bin")), 1, "file 'sub/weights.bin' is missing")


def test_a_file_added_to_the_copy_is_refused_by_listing_and_by_reading(world: World) -> None:
    mv = register(world.reg)
    world.store.write(mv.storage_location, "sub/backdoor.py", b"import os")
    assert_data_loss(refused(lambda: world.reg.svc.artifacts.list_registry_artifacts(world.reg.viewer, mv.artifact_id,
                                                                                     "sub")),
                     1, "not recorded ['sub/backdoor.py']")
    assert_data_loss(refused(lambda: read(world, mv, "sub/backdoor.py")), 1,
                     "file 'sub/backdoor.py' was not recorded at registration")


def test_a_version_without_file_digests_is_checked_against_its_tree_digest(world: World) -> None:
    first, second = register(world.reg), register(world.reg)
    forget_file_digests(world.reg, first)
    forget_file_digests(world.reg, second)
    assert read(world, first, "sub/weights.bin") == FILES["sub/weights.bin"]
    assert [e.path for e in world.reg.svc.artifacts.list_registry_artifacts(world.reg.viewer, first.artifact_id,
                                                                            "")] == [
        "MLmodel", "model.pkl", "sub"
    ]
    # Tampered after its manifest was computed: the file's own hash differs.
    world.store.write(first.storage_location, "model.pkl", b"evil")
    assert_data_loss(refused(lambda: read(world, first, "model.pkl")), 1, "file 'model.pkl' has sha256")
    # Tampered before anything was read: the recomputed tree digest differs from the recorded one.
    world.store.write(second.storage_location, "MLmodel", b"flavors: {}\n")
    assert_data_loss(refused(lambda: read(world, second, "model.pkl")), 2, f"registration recorded {second.digest}")


# ------------------------------------------------------------------------------------------------ bad requests


@pytest.mark.parametrize("path", ["../MLmodel", "/etc/passwd", "sub/../../MLmodel", "sub//weights.bin", "./MLmodel"])
def test_paths_that_leave_the_copy_are_refused(world: World, path: str) -> None:
    mv = register(world.reg)
    svc, viewer = world.reg.svc, world.reg.viewer
    assert refused(lambda: svc.artifacts.open_registry_artifact(viewer, mv.artifact_id, path)).http_status == 400
    assert refused(lambda: svc.artifacts.list_registry_artifacts(viewer, mv.artifact_id, path)).http_status == 400


def test_unknown_and_malformed_artifact_ids_are_refused(world: World) -> None:
    register(world.reg)
    svc, viewer = world.reg.svc, world.reg.viewer
    unknown = refused(lambda: svc.artifacts.list_registry_artifacts(viewer, "0" * 32, ""))
    assert (unknown.error_code, unknown.http_status) == ("RESOURCE_DOES_NOT_EXIST", 404)
    assert refused(lambda: svc.artifacts.open_registry_artifact(viewer, "0" * 32, "MLmodel")).http_status == 404
    assert refused(lambda: svc.artifacts.open_registry_artifact(viewer, "..", "MLmodel")).http_status == 400
    assert refused(lambda: svc.artifacts.list_registry_artifacts(viewer, "", "")).http_status == 400


def test_a_file_the_copy_never_had_is_not_found(world: World) -> None:
    mv = register(world.reg)
    error = refused(lambda: read(world, mv, "nosuch.bin"))
    assert (error.error_code, error.http_status) == ("RESOURCE_DOES_NOT_EXIST", 404)
    assert refused(lambda: read(world, mv, "sub")).http_status == 404  # a directory is not a file
