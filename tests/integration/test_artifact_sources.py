"""SourceFetcher against a moto S3 server and real directories, symlinks and FIFOs."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from registry_store.artifacts import ProgressCallback, SourceFetcher, make_s3_client, tree_digest
from registry_store.errors import InvalidParameterError, UnavailableError
from tests.fixtures.s3 import moto_server
from tests.fixtures.trees import write_tree

FILES = {"MLmodel": b"flavors: {}\n", "model.pkl": b"weights" * 100, "data/x.json": b'{"a": 1}'}


def listing(root: Path) -> dict[str, bytes]:
    return {path.relative_to(root).as_posix(): path.read_bytes() for path in root.rglob("*") if path.is_file()}


@pytest.fixture
def roots(tmp_path: Path) -> tuple[Path, Path]:
    """An allowed source root and a sibling directory outside it."""
    allowed, outside = tmp_path / "allowed", tmp_path / "allowed-not"
    allowed.mkdir()
    outside.mkdir()
    return allowed, outside


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    return tmp_path / "dest"


@pytest.fixture
def fetcher(roots: tuple[Path, Path]) -> SourceFetcher:
    return SourceFetcher([roots[0]])


@pytest.fixture
def s3_fetcher(s3_endpoint: str) -> SourceFetcher:
    return SourceFetcher([], s3_endpoint)


def put_objects(endpoint: str, bucket: str, prefix: str, files: dict[str, bytes]) -> None:
    client = make_s3_client(endpoint)
    for rel, content in files.items():
        client.put_object(Bucket=bucket, Key=f"{prefix}{rel}", Body=content)


# -- S3 -------------------------------------------------------------------------------------


def test_an_s3_prefix_is_copied_with_its_tree_but_not_its_sibling_prefixes(
    s3_endpoint: str, s3_bucket: str, s3_fetcher: SourceFetcher, dest: Path
) -> None:
    put_objects(s3_endpoint, s3_bucket, "runs/1/artifacts/model/", FILES)
    put_objects(s3_endpoint, s3_bucket, "runs/1/artifacts/model2/", {"other.bin": b"no"})
    put_objects(s3_endpoint, s3_bucket, "runs/1/artifacts/model/", {"empty-dir-marker/": b""})
    written: list[int] = []

    s3_fetcher.fetch(f"s3://{s3_bucket}/runs/1/artifacts/model", dest, progress=written.append)

    assert listing(dest) == FILES
    assert sum(written) == sum(len(content) for content in FILES.values())


def test_an_s3_prefix_with_a_trailing_slash_is_copied(
    s3_endpoint: str, s3_bucket: str, s3_fetcher: SourceFetcher, dest: Path
) -> None:
    put_objects(s3_endpoint, s3_bucket, "model/", FILES)

    s3_fetcher.fetch(f"s3://{s3_bucket}/model/", dest)

    assert listing(dest) == FILES


def test_a_single_s3_object_is_copied_under_its_name(
    s3_endpoint: str, s3_bucket: str, s3_fetcher: SourceFetcher, dest: Path
) -> None:
    put_objects(s3_endpoint, s3_bucket, "exports/", {"model.onnx": b"onnx-bytes"})

    s3_fetcher.fetch(f"s3://{s3_bucket}/exports/model.onnx", dest)

    assert listing(dest) == {"model.onnx": b"onnx-bytes"}


def test_a_missing_s3_source_is_an_invalid_parameter_and_leaves_dest_empty(
    s3_endpoint: str, s3_bucket: str, s3_fetcher: SourceFetcher, dest: Path
) -> None:
    put_objects(s3_endpoint, s3_bucket, "model/", FILES)

    for source in (f"s3://{s3_bucket}/mode", f"s3://{s3_bucket}/nothing/", f"s3://{s3_bucket}/model/MLmod"):
        with pytest.raises(InvalidParameterError, match="is empty or does not exist"):
            s3_fetcher.fetch(source, dest)
        assert listing(dest) == {}


def test_a_missing_s3_bucket_is_named_in_the_error(s3_fetcher: SourceFetcher, dest: Path) -> None:
    with pytest.raises(InvalidParameterError, match="bucket 'calabi-no-such-bucket' does not exist"):
        s3_fetcher.fetch("s3://calabi-no-such-bucket/model", dest)


@pytest.mark.usefixtures("s3_endpoint")
def test_s3_access_denied_is_an_invalid_parameter(dest: Path) -> None:
    with moto_server({"INITIAL_NO_AUTH_ACTION_COUNT": "0"}) as endpoint:
        fetcher = SourceFetcher([], endpoint)
        with pytest.raises(InvalidParameterError, match="access denied"):
            fetcher.fetch("s3://locked-bucket/model", dest)


@pytest.mark.usefixtures("s3_endpoint")
def test_an_unreachable_s3_endpoint_is_unavailable(dest: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    fetcher = SourceFetcher([], closed, s3_client_factory=lambda url: make_s3_client(url, max_attempts=1))

    with pytest.raises(UnavailableError):
        fetcher.fetch("s3://bucket/model", dest)


@pytest.mark.parametrize("bad_key", ["model/../../escape.txt", "model//double.txt", "model/./dot.txt"])
def test_s3_object_keys_that_would_escape_dest_are_refused(
    s3_endpoint: str, s3_bucket: str, s3_fetcher: SourceFetcher, tmp_path: Path, bad_key: str
) -> None:
    put_objects(s3_endpoint, s3_bucket, "", {"model/ok.txt": b"ok", bad_key: b"evil"})
    dest = tmp_path / "deep" / "dest"

    with pytest.raises(InvalidParameterError, match="cannot be a file path"):
        s3_fetcher.fetch(f"s3://{s3_bucket}/model", dest)
    assert listing(tmp_path) == {}


def test_s3_objects_that_are_also_prefixes_are_refused(
    s3_endpoint: str, s3_bucket: str, s3_fetcher: SourceFetcher, dest: Path
) -> None:
    put_objects(s3_endpoint, s3_bucket, "model/", {"data": b"file", "data/x": b"nested"})

    with pytest.raises(InvalidParameterError, match="also prefixes"):
        s3_fetcher.fetch(f"s3://{s3_bucket}/model", dest)


# -- local ----------------------------------------------------------------------------------


def test_a_local_directory_below_a_root_is_copied(roots: tuple[Path, Path], fetcher: SourceFetcher, dest: Path) -> None:
    source = write_tree(roots[0] / "team" / "model", FILES)
    written: list[int] = []

    fetcher.fetch(str(source), dest, progress=written.append)

    assert listing(dest) == FILES
    assert sum(written) == sum(len(content) for content in FILES.values())
    assert tree_digest(dest) == tree_digest(source)


def test_a_local_file_uri_below_a_root_is_copied(roots: tuple[Path, Path], fetcher: SourceFetcher, dest: Path) -> None:
    source = write_tree(roots[0] / "with space", FILES)

    fetcher.fetch(source.as_uri(), dest)

    assert "%20" in source.as_uri()
    assert listing(dest) == FILES


def test_a_single_local_file_is_copied_under_its_name(
    roots: tuple[Path, Path], fetcher: SourceFetcher, dest: Path
) -> None:
    source = write_tree(roots[0], {"model.pkl": b"pickle"}) / "model.pkl"

    fetcher.fetch(f"file://{source}", dest)

    assert listing(dest) == {"model.pkl": b"pickle"}


def test_a_root_given_through_a_symlink_still_allows_its_real_contents(tmp_path: Path, dest: Path) -> None:
    real_root = tmp_path / "real-root"
    write_tree(real_root / "model", FILES)
    (tmp_path / "root-link").symlink_to(real_root, target_is_directory=True)
    fetcher = SourceFetcher([tmp_path / "root-link"])

    fetcher.fetch(str(real_root / "model"), dest)

    assert listing(dest) == FILES


def test_a_local_source_outside_the_roots_is_refused(
    roots: tuple[Path, Path], fetcher: SourceFetcher, dest: Path
) -> None:
    source = write_tree(roots[1] / "model", FILES)

    for candidate in (str(source), source.as_uri(), "/etc/passwd", "/"):
        with pytest.raises(InvalidParameterError, match="must be below CALABI_LOCAL_SOURCE_ROOTS"):
            fetcher.fetch(candidate, dest)
    assert listing(dest) == {}


def test_every_local_source_is_refused_when_no_roots_are_configured(tmp_path: Path, dest: Path) -> None:
    source = write_tree(tmp_path / "model", FILES)

    with pytest.raises(InvalidParameterError, match="CALABI_LOCAL_SOURCE_ROOTS is not set"):
        SourceFetcher([]).fetch(str(source), dest)


def test_a_missing_local_source_below_a_root_is_a_clear_error(
    roots: tuple[Path, Path], fetcher: SourceFetcher, dest: Path
) -> None:
    with pytest.raises(InvalidParameterError, match="does not exist"):
        fetcher.fetch(str(roots[0] / "missing"), dest)


def test_an_empty_local_directory_is_refused(roots: tuple[Path, Path], fetcher: SourceFetcher, dest: Path) -> None:
    (roots[0] / "empty" / "sub").mkdir(parents=True)

    with pytest.raises(InvalidParameterError, match="is empty"):
        fetcher.fetch(str(roots[0] / "empty"), dest)
    assert list(dest.iterdir()) == []


def test_a_symlink_escaping_the_roots_is_refused_and_the_partial_copy_removed(
    roots: tuple[Path, Path], fetcher: SourceFetcher, dest: Path
) -> None:
    secret = write_tree(roots[1], {"secret.txt": b"top secret"}) / "secret.txt"
    source = write_tree(roots[0] / "model", FILES)
    (source / "zz-link.txt").symlink_to(secret)

    with pytest.raises(InvalidParameterError, match="symlink pointing outside"):
        fetcher.fetch(str(source), dest)
    assert dest.is_dir()
    assert list(dest.iterdir()) == []


def test_a_source_that_is_itself_a_symlink_out_of_the_roots_is_refused(
    roots: tuple[Path, Path], fetcher: SourceFetcher, dest: Path
) -> None:
    outside = write_tree(roots[1] / "model", FILES)
    (roots[0] / "model-link").symlink_to(outside, target_is_directory=True)

    with pytest.raises(InvalidParameterError, match="must be below CALABI_LOCAL_SOURCE_ROOTS"):
        fetcher.fetch(str(roots[0] / "model-link"), dest)


def test_a_symlink_to_a_file_inside_the_roots_is_copied_as_that_file(
    roots: tuple[Path, Path], fetcher: SourceFetcher, dest: Path
) -> None:
    blob = write_tree(roots[0] / "blobs", {"abc": b"cached weights"}) / "abc"
    source = write_tree(roots[0] / "model", {"MLmodel": b"flavors: {}\n"})
    (source / "model.pkl").symlink_to(blob)

    fetcher.fetch(str(source), dest)

    assert listing(dest) == {"MLmodel": b"flavors: {}\n", "model.pkl": b"cached weights"}
    assert not (dest / "model.pkl").is_symlink()


def test_a_fifo_inside_the_source_is_refused_without_blocking(
    roots: tuple[Path, Path], fetcher: SourceFetcher, dest: Path
) -> None:
    source = write_tree(roots[0] / "model", FILES)
    os.mkfifo(source / "pipe")

    with pytest.raises(InvalidParameterError, match="special file"):
        fetcher.fetch(str(source), dest)
    assert list(dest.iterdir()) == []


@pytest.mark.parametrize(
    "template",
    [
        "{root}/../allowed-not/model",
        "{root}/model/../model",
        "file://{root}/%2e%2e/allowed-not/model",
        "file://{root}/%2E%2E/allowed-not/model",
        "file://{root}/model%00",
        "{root}/model\x00",
        "file://evil.example{root}/model",
        "file://{root}/model?x=1",
        "file://[::1{root}/model",
    ],
)
def test_traversal_and_malformed_local_sources_are_refused(
    roots: tuple[Path, Path], fetcher: SourceFetcher, dest: Path, template: str
) -> None:
    write_tree(roots[0] / "model", FILES)
    write_tree(roots[1] / "model", FILES)

    with pytest.raises(InvalidParameterError):
        fetcher.fetch(template.format(root=roots[0]), dest)
    assert not dest.exists() or listing(dest) == {}


@pytest.mark.parametrize("source", ["model", "./model", "allowed/model", ""])
def test_relative_local_sources_are_refused(fetcher: SourceFetcher, dest: Path, source: str) -> None:
    with pytest.raises(InvalidParameterError):
        fetcher.fetch(source, dest)


def test_a_non_empty_dest_is_a_programming_error(roots: tuple[Path, Path], fetcher: SourceFetcher, dest: Path) -> None:
    source = write_tree(roots[0] / "model", FILES)
    write_tree(dest, {"keep.txt": b"mine"})

    with pytest.raises(ValueError, match="must be empty"):
        fetcher.fetch(str(source), dest)
    assert listing(dest) == {"keep.txt": b"mine"}


# -- tracking schemes -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        "runs:/0a1b2c3d4e5f/model",
        "models:/m-0123456789abcdef",
        "models:/churn/Production",
        "mlflow-artifacts:/1/abc/artifacts/model",
    ],
)
def test_tracking_schemes_need_the_tracking_gateway(fetcher: SourceFetcher, dest: Path, source: str) -> None:
    with pytest.raises(InvalidParameterError, match="needs the MLflow tracking gateway"):
        fetcher.fetch(source, dest)


@pytest.mark.parametrize("source", ["http://127.0.0.1:5000/model", "https://tracking.example/model"])
def test_http_sources_are_refused_even_with_a_tracking_resolver(dest: Path, source: str) -> None:
    def resolver(_source: str, _target: Path, _progress: ProgressCallback | None) -> None:
        raise AssertionError("an http(s) source must not reach the tracking resolver")

    with pytest.raises(InvalidParameterError, match="does not fetch arbitrary URLs"):
        SourceFetcher([], tracking_resolver=resolver).fetch(source, dest)
    assert not dest.exists()  # refused before anything is created


@pytest.mark.parametrize("source", ["gs://bucket/model", "hdfs:///model", "dbfs:/model", "C:\\models\\m"])
def test_unknown_schemes_are_refused_with_the_supported_list(fetcher: SourceFetcher, dest: Path, source: str) -> None:
    with pytest.raises(InvalidParameterError, match="not supported.*tracking gateway"):
        fetcher.fetch(source, dest)


def test_a_configured_tracking_resolver_fetches_tracking_sources(dest: Path) -> None:
    calls: list[str] = []

    def resolver(source: str, target: Path, _progress: ProgressCallback | None) -> None:
        calls.append(source)
        write_tree(target, {"MLmodel": b"run_id: abc\n"})

    SourceFetcher([], tracking_resolver=resolver).fetch("runs:/abc/model", dest)

    assert calls == ["runs:/abc/model"]
    assert listing(dest) == {"MLmodel": b"run_id: abc\n"}


def test_a_failing_tracking_resolver_leaves_dest_empty(dest: Path) -> None:
    def resolver(source: str, target: Path, _progress: ProgressCallback | None) -> None:
        write_tree(target, {"partial/file": b"half"})
        raise UnavailableError(f"tracking server down for {source}")

    with pytest.raises(UnavailableError, match="tracking server down"):
        SourceFetcher([], tracking_resolver=resolver).fetch("models:/churn/1", dest)
    assert list(dest.iterdir()) == []
