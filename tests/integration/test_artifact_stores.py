"""The registry's artifact stores, local and S3 (moto server), through one protocol."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from registry_store.artifacts import (
    ArtifactStore,
    LocalArtifactStore,
    S3ArtifactStore,
    make_artifact_store,
    make_s3_client,
    tree_digest,
)
from registry_store.errors import AlreadyExistsError, InvalidParameterError, NotFoundError, UnavailableError
from tests.fixtures.trees import write_tree

FILES = {"MLmodel": b"flavors: {}\n", "model.pkl": b"\x00" * 2048, "data/nested/x.json": b'{"a": 1}'}


def new_key() -> str:
    return f"churn model/{uuid.uuid4().hex}"


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ArtifactStore]:
    """Each test runs against a local directory store and an S3 store under a prefix."""
    if request.param == "local":
        yield LocalArtifactStore(tmp_path / "store")
    else:
        endpoint: str = request.getfixturevalue("s3_endpoint")
        bucket: str = request.getfixturevalue("s3_bucket")
        yield S3ArtifactStore(bucket, "registry", make_s3_client(endpoint))


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return write_tree(tmp_path / "tree", FILES)


def test_put_tree_stores_every_file_and_reports_the_bytes_written(store: ArtifactStore, tree: Path) -> None:
    written: list[int] = []
    location = store.put_tree(tree, new_key(), progress=written.append)

    assert store.list_files(location) == sorted((rel, len(content)) for rel, content in FILES.items())
    assert sum(written) == sum(len(content) for content in FILES.values())


def test_open_file_streams_the_stored_bytes(store: ArtifactStore, tree: Path) -> None:
    location = store.put_tree(tree, new_key())

    with store.open_file(location, "data/nested/x.json") as handle:
        assert handle.read() == FILES["data/nested/x.json"]
    with store.open_file(location, "model.pkl") as handle:
        assert handle.read(10) == b"\x00" * 10


@pytest.mark.parametrize("relpath", ["../x", "/etc/passwd", "data/../../x", "data//x.json", ""])
def test_open_file_refuses_paths_that_leave_the_location(store: ArtifactStore, tree: Path, relpath: str) -> None:
    location = store.put_tree(tree, new_key())

    with pytest.raises(InvalidParameterError):
        store.open_file(location, relpath)


def test_open_file_of_a_missing_file_is_not_found(store: ArtifactStore, tree: Path) -> None:
    location = store.put_tree(tree, new_key())

    with pytest.raises(NotFoundError):
        store.open_file(location, "nope.bin")
    with pytest.raises(NotFoundError):
        store.open_file(location, "data")


def test_download_tree_recreates_the_same_content(store: ArtifactStore, tree: Path, tmp_path: Path) -> None:
    location = store.put_tree(tree, new_key())
    store.download_tree(location, tmp_path / "copy")

    assert tree_digest(tmp_path / "copy") == tree_digest(tree)


def test_put_tree_of_a_single_file_stores_it_under_its_name(store: ArtifactStore, tree: Path) -> None:
    location = store.put_tree(tree / "model.pkl", new_key())

    assert store.list_files(location) == [("model.pkl", 2048)]


def test_delete_removes_the_tree_and_can_be_repeated(store: ArtifactStore, tree: Path) -> None:
    location = store.put_tree(tree, new_key())
    store.delete(location)

    with pytest.raises(NotFoundError):
        store.list_files(location)
    store.delete(location)


def test_delete_leaves_other_versions_alone(store: ArtifactStore, tree: Path) -> None:
    model = f"m-{uuid.uuid4().hex[:6]}"
    first = store.put_tree(tree, f"{model}/1{uuid.uuid4().hex}")
    second = store.put_tree(tree, f"{model}/{uuid.uuid4().hex}")
    store.delete(first)

    assert len(store.list_files(second)) == len(FILES)


@pytest.mark.parametrize("key", ["../escape", "/abs/key", "model/../../x", "model//x", "model/./x", "a\x00b"])
def test_put_tree_refuses_keys_that_leave_the_store(store: ArtifactStore, tree: Path, key: str) -> None:
    with pytest.raises(InvalidParameterError):
        store.put_tree(tree, key)


def test_put_tree_refuses_to_overwrite_an_existing_location(store: ArtifactStore, tree: Path) -> None:
    key = new_key()
    store.put_tree(tree, key)

    with pytest.raises(AlreadyExistsError):
        store.put_tree(tree, key)


def test_put_tree_refuses_an_empty_tree(store: ArtifactStore, tmp_path: Path) -> None:
    (tmp_path / "empty" / "sub").mkdir(parents=True)

    with pytest.raises(InvalidParameterError, match="empty"):
        store.put_tree(tmp_path / "empty", new_key())


def test_local_locations_are_file_uris_below_the_root(tmp_path: Path, tree: Path) -> None:
    store = LocalArtifactStore(tmp_path / "store")
    location = store.put_tree(tree, "model/abc")

    assert location == (tmp_path / "store" / "model" / "abc").resolve().as_uri()
    assert (tmp_path / "store" / "model" / "abc" / "data" / "nested" / "x.json").is_file()


def test_local_store_refuses_locations_outside_its_root(tmp_path: Path, tree: Path) -> None:
    store = LocalArtifactStore(tmp_path / "store")
    store.put_tree(tree, "model/abc")
    outside = write_tree(tmp_path / "store2" / "model" / "abc", FILES)
    (tmp_path / "store" / "link").symlink_to(outside, target_is_directory=True)
    foreign = [
        outside.as_uri(),
        str(outside),
        (tmp_path / "store").as_uri(),
        f"{(tmp_path / 'store').as_uri()}/model/../../store2/model/abc",
        f"{(tmp_path / 'store').as_uri()}/link",
        f"file://otherhost{tmp_path / 'store' / 'model' / 'abc'}",
        "model/abc",
    ]

    for location in foreign:
        with pytest.raises(InvalidParameterError, match="not inside this artifact store"):
            store.delete(location)
        with pytest.raises(InvalidParameterError, match="not inside this artifact store"):
            store.list_files(location)
    assert tree_digest(outside) == tree_digest(tree)


def test_local_open_file_does_not_follow_a_planted_symlink_out_of_the_location(tmp_path: Path, tree: Path) -> None:
    store = LocalArtifactStore(tmp_path / "store")
    location = store.put_tree(tree, "model/abc")
    (tmp_path / "secret.txt").write_bytes(b"secret")
    (tmp_path / "store" / "model" / "abc" / "planted").symlink_to(tmp_path / "secret.txt")

    with pytest.raises(InvalidParameterError, match="leaves its location"):
        store.open_file(location, "planted")


def test_s3_locations_are_uris_below_the_prefix(s3_endpoint: str, s3_bucket: str, tree: Path) -> None:
    client = make_s3_client(s3_endpoint)
    store = S3ArtifactStore(s3_bucket, "/registry/", client)
    location = store.put_tree(tree, "model/abc")

    assert location == f"s3://{s3_bucket}/registry/model/abc"
    listed = client.list_objects_v2(Bucket=s3_bucket)["Contents"]
    assert sorted(item["Key"] for item in listed) == sorted(f"registry/model/abc/{rel}" for rel in FILES)


def test_s3_store_refuses_locations_outside_its_prefix(s3_endpoint: str, s3_bucket: str) -> None:
    client = make_s3_client(s3_endpoint)
    store = S3ArtifactStore(s3_bucket, "registry", client)
    for rel, content in FILES.items():
        client.put_object(Bucket=s3_bucket, Key=f"registry2/model/abc/{rel}", Body=content)
    foreign = [
        "s3://other-bucket/registry/model/abc",
        f"s3://{s3_bucket}/registry2/model/abc",
        f"s3://{s3_bucket}/registry",
        f"s3://{s3_bucket}/registry/",
        f"s3://{s3_bucket}/registry/../registry2/model/abc",
        "file:///registry/model/abc",
    ]

    for location in foreign:
        with pytest.raises(InvalidParameterError, match="not inside this artifact store"):
            store.delete(location)
    assert len(client.list_objects_v2(Bucket=s3_bucket, Prefix="registry2/")["Contents"]) == len(FILES)


def test_make_artifact_store_builds_an_s3_store_for_s3_roots(s3_endpoint: str, s3_bucket: str) -> None:
    store = make_artifact_store(f"s3://{s3_bucket}/calabi/artifacts", s3_endpoint)

    assert isinstance(store, S3ArtifactStore)
    assert (store.bucket, store.prefix) == (s3_bucket, "calabi/artifacts")
    assert store.client.meta.endpoint_url == s3_endpoint


def test_a_missing_local_directory_is_created_by_the_first_write_not_by_building_the_store(tmp_path: Path) -> None:
    store = make_artifact_store(str(tmp_path / "new" / "artifacts"), None)
    assert isinstance(store, LocalArtifactStore)
    assert not (tmp_path / "new").exists()

    with store.staging() as staged:
        (staged / "MLmodel").write_text("flavors: {}\n")
        store.put_staged(staged, "m/1")

    assert (tmp_path / "new" / "artifacts" / "m" / "1" / "MLmodel").is_file()


@pytest.mark.usefixtures("s3_endpoint")
def test_an_unreachable_s3_store_is_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    store = S3ArtifactStore("bucket", "registry", make_s3_client(closed, max_attempts=1))

    with pytest.raises(UnavailableError):
        store.list_files("s3://bucket/registry/model/abc")
