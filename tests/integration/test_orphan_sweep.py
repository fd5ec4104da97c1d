"""The orphan sweep removes what killed registrations left in a local store, never a recorded version's files.

On SQLite and PostgreSQL: stale staging entries and version trees no row records go; young ones
(a registration in flight on another replica), recorded versions and directories the store did
not make stay. A registration whose tree the sweep took before it recorded the version fails
cleanly instead of recording a version without files.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from sqlalchemy import text

from registry_store.artifacts import LocalArtifactStore, S3ArtifactStore
from registry_store.entities import ModelVersion
from registry_store.errors import UnavailableError
from tests.fixtures.trees import write_tree
from tests.integration.helpers import DATABASES, Registry, build_registry, database_url, files_below

MIN_AGE_S = 600.0
OLD = time.time() - 3600


def _age(path: Path, when: float = OLD) -> Path:
    """Set the modification time of ``path`` and everything below it."""
    for directory, subdirs, files in os.walk(path, topdown=False):
        for name in (*files, *subdirs):
            os.utime(os.path.join(directory, name), (when, when))
    os.utime(path, (when, when))
    return path


def _path(version: ModelVersion) -> Path:
    return Path(unquote(urlsplit(version.storage_location).path))


@pytest.fixture(params=DATABASES)
def registry(request: pytest.FixtureRequest, tmp_path: Path) -> Registry:
    built = build_registry(tmp_path, database_url(request, tmp_path))
    request.addfinalizer(built.services.close)
    return built


def test_the_sweep_takes_only_old_unrecorded_trees_and_staging_leftovers(registry: Registry) -> None:
    root = Path(registry.artifact_root)
    [old_version, young_version] = registry.versions("churn", 2)
    _age(_path(old_version))
    staging = root / ":staging"
    leftovers = {
        "killed copy": _age(write_tree(staging / uuid.uuid4().hex, {"model.pkl": b"x" * 4096})),
        "killed upload": _age(write_tree(staging / uuid.uuid4().hex, {"upload.tar": b"t" * 100})),
        "unrecorded tree": _age(write_tree(root / "churn" / uuid.uuid4().hex, {"MLmodel": b"m", "a/b.bin": b"b"})),
        "tree of a deleted model": _age(write_tree(root / "gone" / uuid.uuid4().hex, {"MLmodel": b"m"})),
    }
    long_upload = _age(write_tree(staging / uuid.uuid4().hex, {"x": b"1"}))
    (long_upload / "upload.tar").write_bytes(b"still arriving")  # an old directory, written to just now
    kept = {
        "young staging": write_tree(staging / uuid.uuid4().hex, {"model.pkl": b"x"}),
        "young unrecorded tree": write_tree(root / "churn" / uuid.uuid4().hex, {"MLmodel": b"m"}),
        "not a version tree": _age(write_tree(root / "churn" / "notes", {"readme": b"r"})),
        "long upload": long_upload,
        "old recorded version": _path(old_version),
        "young recorded version": _path(young_version),
    }
    recorded_files = {p: p.read_bytes() for p in files_below(_path(old_version)) + files_below(_path(young_version))}

    report = registry.svc.artifacts.sweep_orphans(min_age_s=MIN_AGE_S)

    assert not [what for what, path in leftovers.items() if path.exists()]
    assert not [what for what, path in kept.items() if not path.exists()]
    assert {r.location: r.size for r in report.staging} == {
        str(leftovers["killed copy"]): 4096, str(leftovers["killed upload"]): 100}
    assert {r.location: r.size for r in report.orphans} == {
        leftovers["unrecorded tree"].as_uri(): 2, leftovers["tree of a deleted model"].as_uri(): 1}
    assert {p: p.read_bytes() for p in recorded_files} == recorded_files
    # With no minimum age the young leftovers go too, and recorded versions still stay whole.
    registry.svc.artifacts.sweep_orphans(min_age_s=0)
    assert [what for what, path in kept.items() if path.exists()] == [
        "not a version tree", "old recorded version", "young recorded version"]
    assert {p: p.read_bytes() for p in recorded_files} == recorded_files
    assert [p.name for p in staging.iterdir()] == []


def test_a_registration_whose_tree_was_swept_before_it_recorded_fails_and_records_nothing(
    registry: Registry,
) -> None:
    registry.model("churn")
    store = registry.services.artifacts
    assert isinstance(store, LocalArtifactStore)
    outcome: list[ModelVersion | BaseException] = []

    def register() -> None:
        try:
            outcome.append(registry.svc.registration.create_model_version(
                registry.admin, name="churn", source=str(registry.artifact())))
        except BaseException as exc:  # the outcome is asserted below
            outcome.append(exc)

    thread = threading.Thread(target=register)
    with registry.services.db.write_connection() as connection:  # the registration copies, then waits to record
        if registry.services.db.is_postgres:  # the lock the sweep takes there (SQLite: the write transaction)
            connection.execute(text("SELECT id FROM registered_models WHERE name = 'churn' FOR UPDATE"))
        thread.start()
        deadline = time.monotonic() + 30
        while not (trees := store.stored_trees()) and time.monotonic() < deadline:
            time.sleep(0.05)  # polling a condition with a deadline
        [tree] = trees
        finish = store.retire(tree)  # what the sweep does in its transaction, before this one ends
        assert finish is not None
        finish()
    thread.join(timeout=30)

    [failure] = outcome
    assert isinstance(failure, UnavailableError), failure
    assert registry.scalar("SELECT count(*) FROM model_versions") == 0
    assert store.stored_trees() == []


def test_an_s3_store_is_swept_prefix_by_prefix(request: pytest.FixtureRequest, tmp_path: Path, s3_endpoint: str,
                                                s3_bucket: str) -> None:
    registry = build_registry(tmp_path, f"sqlite:///{tmp_path / 'registry.db'}",
                              artifact_root=f"s3://{s3_bucket}/registry", s3_endpoint_url=s3_endpoint)
    request.addfinalizer(registry.services.close)
    [version] = registry.versions("churn", 1)
    store = registry.services.artifacts
    assert isinstance(store, S3ArtifactStore)
    orphan, foreign = f"registry/churn/{uuid.uuid4().hex}", "registry/churn/notes"
    for key in (f"{orphan}/MLmodel", f"{orphan}/a/b.bin", f"{foreign}/readme"):
        store.client.put_object(Bucket=s3_bucket, Key=key, Body=b"xy")

    assert registry.svc.artifacts.sweep_orphans(min_age_s=MIN_AGE_S).orphans == []  # all of them are young
    report = registry.svc.artifacts.sweep_orphans(min_age_s=0)

    assert [(r.location, r.size) for r in report.orphans] == [(f"s3://{s3_bucket}/{orphan}", 4)]
    assert store.swept_away(f"s3://{s3_bucket}/{orphan}") and not store.swept_away(version.storage_location)
    assert store.list_files(f"s3://{s3_bucket}/{foreign}") == [("readme", 2)]
    assert registry.svc.artifacts.list_registry_artifacts(registry.admin, version.storage_location.rsplit("/", 1)[1])
