"""The optimised registration path: sources hashed while they are copied (``SourceFacts.file_digests``),
trees staged in ``<root>/:staging/`` and renamed into ``<root>/<model>/<uuid>`` (``staging()`` /
``put_staged``), and the version numbered, recorded and audited with prebuilt statements, on SQLite
and PostgreSQL, one thread or twenty."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

import registry_store.context
from registry_store.artifacts import (
    LocalArtifactStore,
    S3ArtifactStore,
    SourceFacts,
    SourceFetcher,
    make_s3_client,
    manifest_digest,
    tree_digest,
    tree_manifest,
)
from registry_store.artifacts._tree import CHUNK_SIZE
from registry_store.entities import ModelVersion
from registry_store.errors import AlreadyExistsError, InvalidParameterError, RegistryError
from tests.fixtures.trees import write_tree
from tests.integration.helpers import DATABASES, Registry, build_registry, database_url, files_below

MODEL = "churn-predictor"
STAGING = ":staging"
BIG = 3 * CHUNK_SIZE + 12_345
"""A 3 MB file spanning several copy chunks, the last one partial."""
THREADS = 20
MLMODEL = (
    b"artifact_path: model\nflavors:\n  python_function:\n    loader_module: mlflow.sklearn\n  sklearn: {}\n"
    b"signature:\n  inputs: '[{\"type\": \"double\", \"name\": \"tenure\"}]'\n  outputs: '[{\"type\": \"long\"}]'\n"
)


@pytest.fixture(scope="module")
def files() -> dict[str, bytes]:
    """An MLflow model with nested directories, an empty file, recorded metrics and a 3 MB file.

    The big file is random, so a copier hashing only some of its chunks gets a different digest.
    """
    return {
        "MLmodel": MLMODEL,
        "model.pkl": os.urandom(BIG),
        "empty.txt": b"",
        "metrics.json": b'{"auc": 0.91, "rows": 120}',
        "data/features.json": b'["tenure", "plan"]',
        "data/nested/deeper/weights.bin": b"\x00\x01" * 700,
        "data/nested/also-empty.txt": b"",
    }


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    with ExitStack() as exits:
        yield exits


def returns_of(monkeypatch: pytest.MonkeyPatch, owner: type, method: str) -> list[Any]:
    """Wrap ``owner.method`` (for the test) so that each call's return value is recorded in the list returned."""
    returned: list[Any] = []
    original = getattr(owner, method)

    def recording(self: Any, *args: Any, **kwargs: Any) -> Any:
        value = original(self, *args, **kwargs)
        returned.append(value)
        return value

    monkeypatch.setattr(owner, method, recording)
    return returned


def manifest_of(files: dict[str, bytes]) -> dict[str, str]:
    """The manifest computed straight from the bytes, independently of the code under test."""
    return {rel: hashlib.sha256(content).hexdigest() for rel, content in files.items()}


def put_objects(endpoint: str, bucket: str, prefix: str, files: dict[str, bytes]) -> None:
    client = make_s3_client(endpoint)
    for rel, content in files.items():
        client.put_object(Bucket=bucket, Key=f"{prefix}{rel}", Body=content)


def local_path(location: str) -> Path:
    assert location.startswith("file://"), location
    return Path(unquote(urlsplit(location).path))


def entries(directory: Path) -> list[str]:
    """The names directly in ``directory`` (none when it does not exist)."""
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in files_below(root)}


# ------------------------------------------------------------------ file_digests: hashed while copying


@pytest.mark.parametrize("form", ["path", "file URI"])
def test_a_local_copy_returns_the_manifest_of_the_copied_tree(
    tmp_path: Path, files: dict[str, bytes], form: str
) -> None:
    source = write_tree(tmp_path / "allowed" / "model", files)
    shared = write_tree(tmp_path / "allowed" / "shared", {"vocab.txt": b"tenure plan"})
    (source / "data" / "vocab.txt").symlink_to(shared / "vocab.txt")  # inside the roots: copied as a file
    dest = tmp_path / "dest"

    facts = SourceFetcher([tmp_path / "allowed"]).fetch(str(source) if form == "path" else source.as_uri(), dest)

    copied = {**files, "data/vocab.txt": b"tenure plan"}
    assert facts.file_digests == tree_manifest(dest) == manifest_of(copied)
    assert snapshot(dest) == copied


def test_a_single_local_file_returns_its_own_digest_under_its_name(tmp_path: Path, files: dict[str, bytes]) -> None:
    source = write_tree(tmp_path / "allowed" / "model", files)
    dest = tmp_path / "dest"

    facts = SourceFetcher([tmp_path / "allowed"]).fetch(str(source / "model.pkl"), dest)

    assert facts.file_digests == tree_manifest(dest) == {"model.pkl": hashlib.sha256(files["model.pkl"]).hexdigest()}


def test_a_source_directory_swapped_for_a_symlink_mid_copy_is_refused_and_nothing_is_left(tmp_path: Path) -> None:
    source = write_tree(tmp_path / "allowed" / "model", {"a.bin": b"a" * 64, "b.bin": b"b" * 64})
    outside = write_tree(tmp_path / "outside" / "model", {"a.bin": b"x", "b.bin": b"secret"})
    dest = tmp_path / "dest"
    swapped: list[int] = []

    def swap_after_the_first_chunk(_size: int) -> None:
        if not swapped:
            source.rename(tmp_path / "allowed" / "moved")
            source.symlink_to(outside, target_is_directory=True)
            swapped.append(_size)

    with pytest.raises(InvalidParameterError, match="'b.bin' resolves outside the allowed roots"):
        SourceFetcher([tmp_path / "allowed"]).fetch(str(source), dest, progress=swap_after_the_first_chunk)
    assert swapped == [64]
    assert list(dest.iterdir()) == []


def test_local_sources_stage_one_at_a_time_and_remote_sources_do_not_queue(tmp_path: Path) -> None:
    fetcher = SourceFetcher([tmp_path])
    local = fetcher.slot(str(tmp_path / "model"))

    assert fetcher.slot((tmp_path / "other").as_uri()) is local
    assert fetcher.slot("FILE://" + str(tmp_path / "x")) is local
    with local:
        for remote in ("s3://bucket/model", "runs:/0123/model", "models:/m-0123", "mlflow-artifacts:/1/2"):
            with fetcher.slot(remote):  # entered at once while the local slot is held
                pass
        with ThreadPoolExecutor(1) as pool:  # another thread's local staging would have to wait
            busy = pool.submit(lambda: local.acquire(blocking=False))
            assert busy.result(timeout=30) is False
    assert SourceFetcher([tmp_path]).slot(str(tmp_path)) is not local  # one slot per fetcher (process)


def test_an_s3_copy_returns_the_manifest_of_the_copied_tree(
    s3_endpoint: str, s3_bucket: str, tmp_path: Path, files: dict[str, bytes]
) -> None:
    put_objects(s3_endpoint, s3_bucket, "runs/7/artifacts/model/", files)
    put_objects(s3_endpoint, s3_bucket, "runs/7/artifacts/model-other/", {"not-mine.bin": b"x"})
    dest = tmp_path / "dest"

    facts = SourceFetcher([], s3_endpoint).fetch(f"s3://{s3_bucket}/runs/7/artifacts/model", dest)

    assert facts.file_digests == tree_manifest(dest) == manifest_of(files)
    assert snapshot(dest) == files


def test_a_single_s3_object_returns_its_own_digest_under_its_name(
    s3_endpoint: str, s3_bucket: str, tmp_path: Path, files: dict[str, bytes]
) -> None:
    put_objects(s3_endpoint, s3_bucket, "exports/", {"model.pkl": files["model.pkl"]})
    dest = tmp_path / "dest"

    facts = SourceFetcher([], s3_endpoint).fetch(f"s3://{s3_bucket}/exports/model.pkl", dest)

    assert facts.file_digests == tree_manifest(dest) == {"model.pkl": hashlib.sha256(files["model.pkl"]).hexdigest()}


@contextmanager
def sqlite_registry(tmp_path: Path, **options: str | None) -> Iterator[Registry]:
    """A registry on SQLite (local artifact root unless ``artifact_root`` is given) holding the model MODEL."""
    registry = build_registry(tmp_path, f"sqlite:///{tmp_path / 'registry.db'}", **options)
    try:
        registry.model(MODEL)
        yield registry
    finally:
        registry.services.close()


@pytest.fixture
def sqlite_reg(tmp_path: Path) -> Iterator[Registry]:
    with sqlite_registry(tmp_path) as registry:
        yield registry


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_the_recorded_digest_is_the_manifest_digest_of_the_fetch_and_the_tree_digest_of_the_copy(
    request: pytest.FixtureRequest, tmp_path: Path, files: dict[str, bytes], kind: str,
    monkeypatch: pytest.MonkeyPatch, stack: ExitStack,
) -> None:
    endpoint: str | None = None
    if kind == "s3":
        endpoint = request.getfixturevalue("s3_endpoint")
        bucket: str = request.getfixturevalue("s3_bucket")
        put_objects(endpoint, bucket, "sources/model/", files)
    reg = stack.enter_context(sqlite_registry(tmp_path, s3_endpoint_url=endpoint))
    source = f"s3://{bucket}/sources/model" if kind == "s3" else str(write_tree(reg.source_root / "model", files))
    fetched: list[SourceFacts] = returns_of(monkeypatch, SourceFetcher, "fetch")

    created = reg.svc.registration.create_model_version(reg.engineer, name=MODEL, source=source)

    [facts] = fetched
    assert facts.file_digests == manifest_of(files)
    copy = local_path(created.storage_location)
    assert created.digest == manifest_digest(facts.file_digests) == tree_digest(copy)
    recorded = reg.scalar("SELECT file_digests FROM model_versions WHERE artifact_id = :a", a=created.artifact_id)
    assert json.loads(recorded) == tree_manifest(copy) == facts.file_digests
    assert snapshot(copy) == files


@pytest.mark.parametrize("root", ["local", "s3"])
def test_registration_reports_every_byte_written_to_the_store_once(
    request: pytest.FixtureRequest, tmp_path: Path, files: dict[str, bytes], root: str, stack: ExitStack
) -> None:
    """Local root: the fetch writes into the store (the rename reports nothing); S3 root: the upload reports."""
    options: dict[str, str | None] = {}
    if root == "s3":
        bucket: str = request.getfixturevalue("s3_bucket")
        endpoint: str = request.getfixturevalue("s3_endpoint")
        options = {"artifact_root": f"s3://{bucket}/registry", "s3_endpoint_url": endpoint}
    reg = stack.enter_context(sqlite_registry(tmp_path, **options))
    written: list[int] = []
    lock = threading.Lock()

    def progress(count: int) -> None:  # S3 transfers call back from their own threads
        with lock:
            written.append(count)

    created = reg.svc.registration.create_model_version(
        reg.engineer, name=MODEL, source=str(write_tree(reg.source_root / "model", files)), progress=progress
    )

    assert sum(written) == sum(len(content) for content in files.values())
    assert created.digest == manifest_digest(manifest_of(files))
    assert created.storage_location.startswith("s3://" if root == "s3" else "file://")


# ------------------------------------------------------------------ the local store: staging() and put_staged


@pytest.fixture
def store(tmp_path: Path) -> LocalArtifactStore:
    return LocalArtifactStore(tmp_path / "store")


def new_key() -> str:
    return f"{MODEL}/{uuid.uuid4().hex}"


SMALL = {"MLmodel": b"flavors: {}\n", "model.pkl": b"weights", "data/x.json": b"{}", "data/empty": b""}


def test_put_staged_renames_the_staged_tree_to_root_model_uuid_and_the_staging_dir_is_gone(
    store: LocalArtifactStore,
) -> None:
    key = new_key()
    with store.staging() as staged:
        assert staged.parent == store.root / STAGING
        assert entries(staged) == []
        write_tree(staged, SMALL)
        inode = (staged / "model.pkl").stat().st_ino

        location = store.put_staged(staged, key)

        assert not os.path.lexists(staged)
    target = store.root / MODEL / key.split("/")[1]
    assert location == target.as_uri()
    assert snapshot(target) == SMALL
    assert (target / "model.pkl").stat().st_ino == inode  # renamed, not copied: the bytes were written once
    assert store.list_files(location) == sorted((rel, len(content)) for rel, content in SMALL.items())
    assert entries(store.root / STAGING) == []
    assert entries(store.root) == sorted([STAGING, MODEL])


@pytest.mark.parametrize("layout", ["nothing", "only empty directories"])
def test_put_staged_refuses_an_empty_staging_tree(store: LocalArtifactStore, layout: str) -> None:
    key = new_key()
    with store.staging() as staged:
        if layout != "nothing":
            (staged / "a" / "b").mkdir(parents=True)
            (staged / "c").mkdir()

        with pytest.raises(InvalidParameterError, match="empty"):
            store.put_staged(staged, key)

    assert not os.path.lexists(store.root.joinpath(*key.split("/")))
    assert entries(store.root / STAGING) == []


def _occupy(target: Path, what: str) -> None:
    if what == "a tree":
        write_tree(target, {"MLmodel": b"the incumbent", "nested/keep.bin": b"keep"})
    elif what == "an empty directory":
        target.mkdir(parents=True)
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"a file")


OCCUPANTS = ["a tree", "an empty directory", "a file"]


@pytest.mark.parametrize("what", OCCUPANTS)
def test_put_staged_never_replaces_an_existing_location(store: LocalArtifactStore, what: str) -> None:
    key = new_key()
    target = store.root.joinpath(*key.split("/"))
    _occupy(target, what)
    before = snapshot(target) if target.is_dir() else {"": target.read_bytes()}

    with store.staging() as staged:
        write_tree(staged, SMALL)
        with pytest.raises(AlreadyExistsError):
            store.put_staged(staged, key)

    assert (snapshot(target) if target.is_dir() else {"": target.read_bytes()}) == before
    assert entries(store.root / STAGING) == []


@pytest.mark.parametrize("what", ["a tree", "a file"])
def test_put_staged_never_replaces_a_location_that_appears_after_its_check(
    store: LocalArtifactStore, monkeypatch: pytest.MonkeyPatch, what: str
) -> None:
    """The rename itself refuses to overwrite: a location created between the check and the rename survives."""
    key = new_key()
    target = store.root.joinpath(*key.split("/"))
    _occupy(target, what)
    before = snapshot(target) if target.is_dir() else {"": target.read_bytes()}
    lexists = os.path.lexists

    def blind_to_the_target(path: str | os.PathLike[str]) -> bool:
        return False if Path(path) == target else lexists(path)

    with store.staging() as staged:
        write_tree(staged, SMALL)
        with monkeypatch.context() as patch:
            patch.setattr(os.path, "lexists", blind_to_the_target)
            with pytest.raises(AlreadyExistsError):
                store.put_staged(staged, key)

    assert (snapshot(target) if target.is_dir() else {"": target.read_bytes()}) == before
    assert entries(store.root / STAGING) == []


def _plant(staged: Path, what: str, outside: Path) -> None:
    nested = staged / "data"
    if what == "symlink to a file in the tree":
        (nested / "alias.bin").symlink_to(staged / "model.pkl")
    elif what == "symlink leaving the store":
        (outside / "secret").write_text("server-side secret")
        (nested / "secret").symlink_to(outside / "secret")
    elif what == "symlink to a directory":
        (staged / "linked-dir").symlink_to(outside)
    else:
        os.mkfifo(nested / "pipe")


PLANTED = ["symlink to a file in the tree", "symlink leaving the store", "symlink to a directory", "FIFO"]


@pytest.mark.parametrize("what", PLANTED)
def test_put_staged_refuses_a_symlink_or_fifo_planted_in_the_staging_tree(
    store: LocalArtifactStore, tmp_path: Path, what: str
) -> None:
    key = new_key()
    outside = tmp_path / "outside"
    outside.mkdir()
    with store.staging() as staged:
        write_tree(staged, SMALL)
        _plant(staged, what, outside)

        with pytest.raises(InvalidParameterError, match="symlink|special file"):
            store.put_staged(staged, key)

    assert not os.path.lexists(store.root.joinpath(*key.split("/")))
    assert entries(store.root / MODEL) == []
    assert entries(store.root / STAGING) == []
    assert entries(outside) == ([] if what != "symlink leaving the store" else ["secret"])


def test_put_staged_refuses_a_directory_that_is_not_one_of_its_staging_directories(
    store: LocalArtifactStore, tmp_path: Path
) -> None:
    elsewhere = write_tree(tmp_path / "elsewhere", SMALL)
    other = LocalArtifactStore(tmp_path / "other-store")

    with pytest.raises(ValueError, match="not a staging directory"):
        store.put_staged(elsewhere, new_key())
    with other.staging() as foreign:
        write_tree(foreign, SMALL)
        with pytest.raises(ValueError, match="not a staging directory"):
            store.put_staged(foreign, new_key())

    assert snapshot(elsewhere) == SMALL
    assert entries(store.root) == []


def test_put_staged_copies_when_the_rename_crosses_filesystems(
    store: LocalArtifactStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = new_key()
    rename = os.rename

    def cross_device(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        if Path(src).parent == store.root / STAGING:
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        rename(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "rename", cross_device)
    with store.staging() as staged:
        write_tree(staged, SMALL)
        location = store.put_staged(staged, key)

    assert location == store.root.joinpath(*key.split("/")).as_uri()
    assert snapshot(local_path(location)) == SMALL
    assert entries(store.root / STAGING) == []


def test_the_staging_directory_is_removed_when_its_block_fails(store: LocalArtifactStore) -> None:
    with pytest.raises(RuntimeError, match="midway"), store.staging() as staged:
        write_tree(staged, SMALL)
        raise RuntimeError("midway")

    assert not os.path.lexists(staged)
    assert entries(store.root / STAGING) == []
    assert entries(store.root) == [STAGING]


def test_the_s3_store_stages_in_a_temporary_directory_and_uploads_it(
    s3_endpoint: str, s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    s3_store = S3ArtifactStore(s3_bucket, "registry", make_s3_client(s3_endpoint))
    assert not s3_store.stages_in_place
    key = new_key()
    written: list[int] = []

    with s3_store.staging() as staged:
        assert staged.parent == tmp_path / "tmp"
        write_tree(staged, SMALL)
        location = s3_store.put_staged(staged, key, progress=written.append)

    assert location == f"s3://{s3_bucket}/registry/{key}"
    assert s3_store.list_files(location) == sorted((rel, len(content)) for rel, content in SMALL.items())
    assert sum(written) == sum(len(content) for content in SMALL.values())
    assert entries(tmp_path / "tmp") == []
    with s3_store.staging() as staged, pytest.raises(AlreadyExistsError):
        write_tree(staged, {"other": b"x"})
        s3_store.put_staged(staged, key)
    with s3_store.staging() as staged, pytest.raises(InvalidParameterError, match="empty"):
        s3_store.put_staged(staged, new_key())
    assert entries(tmp_path / "tmp") == []


# ------------------------------------------------------------------ a failed registration leaves nothing


def _fifo_midway(source: Path) -> None:
    os.mkfifo(source / "zz-pipe")  # sorted last: every other file is copied before the fetch fails


def _symlink_escape_midway(source: Path) -> None:
    outside = source.parent.parent / "outside"
    outside.mkdir(exist_ok=True)
    (outside / "secret").write_text("server-side secret")
    (source / "zz-link").symlink_to(outside / "secret")


def _unreadable_midway(source: Path) -> None:
    (source / "zz-locked.bin").write_bytes(b"locked")
    (source / "zz-locked.bin").chmod(0)


def _bad_metrics_after_the_fetch(source: Path) -> None:
    (source / "metrics.json").write_text("{not json")  # the whole tree is staged before this is read


AUDIT_FAILS = "audit append fails (after the rename into place)"
FAILURES: dict[str, Callable[[Path], None] | None] = {
    "FIFO in the source (fetch fails midway)": _fifo_midway,
    "symlink leaving the allowed roots (fetch fails midway)": _symlink_escape_midway,
    "invalid metrics.json (fails after the fetch)": _bad_metrics_after_the_fetch,
    AUDIT_FAILS: None,
}
if os.geteuid() != 0:  # root reads a chmod 000 file anyway: the FIFO and the symlink cover that case
    FAILURES["unreadable file (fetch fails midway)"] = _unreadable_midway


def _refuse_the_event(*_args: object, **_kwargs: object) -> None:
    raise RegistryError("the audit log refused the event")


@pytest.mark.parametrize("failure", list(FAILURES))
def test_a_failed_registration_leaves_nothing_in_staging_or_at_the_target_and_no_version(
    sqlite_reg: Registry, files: dict[str, bytes], monkeypatch: pytest.MonkeyPatch, failure: str
) -> None:
    reg = sqlite_reg
    root = Path(reg.artifact_root)
    source = write_tree(reg.source_root / "model", files)
    events_before = reg.audit_count()
    written: list[int] = []
    renamed: list[str] = returns_of(monkeypatch, LocalArtifactStore, "put_staged")
    with monkeypatch.context() as patch:
        if (spoil := FAILURES[failure]) is not None:
            spoil(source)
        else:
            patch.setattr(registry_store.context, "append_event", _refuse_the_event)

        with pytest.raises(RegistryError):
            reg.svc.registration.create_model_version(reg.engineer, name=MODEL, source=str(source),
                                                      progress=written.append)

    assert sum(written) >= len(files["model.pkl"])  # it failed midway: the big file had been copied
    if failure == AUDIT_FAILS:
        [location] = renamed
        assert not os.path.lexists(local_path(location))
    else:
        assert renamed == []
    assert entries(root / STAGING) == []
    assert entries(root / MODEL) == []
    assert reg.scalar("SELECT count(*) FROM model_versions") == 0
    assert reg.audit_count() == events_before
    assert reg.svc.audit.verify_audit_chain(reg.viewer).ok
    retry = reg.svc.registration.create_model_version(reg.engineer, name=MODEL, source=str(reg.artifact()))
    assert retry.version == 1


# ------------------------------------------------------------------ the returned view, the audit event


@pytest.fixture(params=DATABASES)
def reg(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Registry]:
    registry = build_registry(tmp_path, database_url(request, tmp_path))
    registry.model(MODEL)
    yield registry
    registry.services.close()


def register(reg: Registry, files: dict[str, bytes], name: str = "model") -> ModelVersion:
    return reg.svc.registration.create_model_version(
        reg.engineer,
        name=MODEL,
        source=str(write_tree(reg.source_root / name, files)),
        run_id="run-0123",
        model_id="m-abc",
        run_link="https://mlflow.example/runs/0123",
        description="nightly retrain",
        tags=[("zeta", "last"), ("alpha", "first"), ("team/owner", "risk"), ("mid", "middle")],
    )


def test_the_returned_version_equals_what_get_model_version_reads_back(
    reg: Registry, files: dict[str, bytes]
) -> None:
    first = register(reg, files, "first")
    created = register(reg, files, "second")

    fetched = reg.svc.versions.get_model_version(reg.viewer, name=MODEL, version=created.version)

    assert created.model_dump() == fetched.model_dump()
    assert created == fetched
    assert (first.version, created.version) == (1, 2)
    assert list(created.tags) == ["alpha", "mid", "team/owner", "zeta"]
    assert created.tags == {"zeta": "last", "alpha": "first", "team/owner": "risk", "mid": "middle"}
    assert created.aliases == [] == fetched.aliases
    assert created.evidence == {"flavors": ["python_function", "sklearn"], "metrics": {"auc": 0.91, "rows": 120.0}}
    assert created.signature and created.signature == first.signature
    copy = local_path(created.storage_location)
    assert copy.parent == Path(reg.artifact_root) / MODEL
    assert created.artifact_id == copy.name != first.artifact_id
    assert created.digest == tree_digest(copy) == manifest_digest(manifest_of(files)) == first.digest
    assert (created.current_stage, created.status, created.user_id) == ("None", "READY", reg.engineer.name)
    assert (created.run_id, created.model_id, created.description) == ("run-0123", "m-abc", "nightly retrain")
    assert created.creation_timestamp == created.last_updated_timestamp > 0
    assert entries(Path(reg.artifact_root) / STAGING) == []


def test_the_registration_event_carries_the_digest_and_location_and_the_chain_verifies(
    reg: Registry, files: dict[str, bytes]
) -> None:
    register(reg, files, "first")
    events_before = reg.audit_count()
    created = register(reg, files, "second")

    events = reg.svc.audit.list_audit_events(reg.viewer, model_name=MODEL, limit=10_000)
    event = events[-1]
    assert reg.audit_count() == events_before + 1
    assert (event.action, event.model_name, event.version, event.subject) == (
        "create_model_version", MODEL, created.version, f"{MODEL}/{created.version}"
    )
    assert event.actor == reg.engineer.name
    assert event.after == {
        "source": created.source,
        "run_id": "run-0123",
        "model_id": "m-abc",
        "digest": created.digest,
        "storage_location": created.storage_location,
        "tags": created.tags,
    }
    assert event.prev_hash == events[-2].hash
    result = reg.svc.audit.verify_audit_chain(reg.viewer)
    assert result.ok, result.problem
    assert result.events_checked == reg.audit_count()
    assert (reg.scalar("SELECT seq FROM audit_head"), reg.scalar("SELECT hash FROM audit_head")) == (
        event.seq, event.hash
    )


# ------------------------------------------------------------------ concurrency


def register_concurrently(reg: Registry, models: list[str]) -> list[ModelVersion]:
    """One thread per entry of ``models``, all released at once, each registering a fresh artifact into it."""
    sources = [reg.artifact(payload=f"weights of thread {i}".encode()) for i in range(len(models))]
    barrier = threading.Barrier(len(models), timeout=60)

    def worker(index: int) -> ModelVersion:
        barrier.wait()
        return reg.svc.registration.create_model_version(reg.engineer, name=models[index], source=str(sources[index]))

    with ThreadPoolExecutor(max_workers=len(models)) as pool:
        created = [f.result(timeout=120) for f in [pool.submit(worker, i) for i in range(len(models))]]
    for source, mv in zip(sources, created, strict=True):
        assert mv.digest == tree_digest(source) == tree_digest(local_path(mv.storage_location))
        assert mv == reg.svc.versions.get_model_version(reg.viewer, name=mv.name, version=mv.version)
    return created


def assert_chain_extended_by(reg: Registry, events_before: int, count: int) -> None:
    events = reg.svc.audit.list_audit_events(reg.viewer, after_seq=events_before, limit=10_000)
    assert [e.seq for e in events] == list(range(events_before + 1, events_before + count + 1))
    assert {e.action for e in events} == {"create_model_version"}
    result = reg.svc.audit.verify_audit_chain(reg.viewer)
    assert result.ok, result.problem
    assert result.events_checked == events_before + count


def test_twenty_threads_registering_into_one_model_get_versions_one_to_twenty(reg: Registry) -> None:
    events_before = reg.audit_count()

    created = register_concurrently(reg, [MODEL] * THREADS)

    assert sorted(mv.version for mv in created) == list(range(1, THREADS + 1))
    root = Path(reg.artifact_root)
    assert entries(root / MODEL) == sorted(mv.artifact_id for mv in created)
    assert len({mv.storage_location for mv in created}) == THREADS
    assert entries(root / STAGING) == []
    assert reg.scalar("SELECT count(*) FROM model_versions") == THREADS
    assert reg.scalar("SELECT next_version FROM registered_models WHERE name = :n", n=MODEL) == THREADS + 1
    assert_chain_extended_by(reg, events_before, THREADS)
    events = reg.svc.audit.list_audit_events(reg.viewer, after_seq=events_before, limit=10_000)
    assert sorted(e.version or 0 for e in events) == list(range(1, THREADS + 1))


def test_twenty_threads_registering_into_four_models_extend_one_unforked_chain(reg: Registry) -> None:
    """Different models do not wait for each other's row lock: only the audit head orders them."""
    models = [MODEL, *(reg.model(f"{MODEL}-{n}") for n in (2, 3, 4))]
    events_before = reg.audit_count()

    created = register_concurrently(reg, [models[i % len(models)] for i in range(THREADS)])

    per_model = THREADS // len(models)
    for model in models:
        assert sorted(mv.version for mv in created if mv.name == model) == list(range(1, per_model + 1))
        assert len(entries(Path(reg.artifact_root) / model)) == per_model
    assert entries(Path(reg.artifact_root) / STAGING) == []
    assert_chain_extended_by(reg, events_before, THREADS)


def test_a_local_source_overlapping_the_registrys_own_data_is_refused(tmp_path: Path) -> None:
    from calabi.bootstrap import build_services, prepare
    from calabi.settings import Settings

    settings = Settings(data_dir=tmp_path / "data", local_source_roots=[tmp_path], admin_token="a" * 24)
    prepare(settings)
    services = build_services(settings)
    try:
        actor = services.users.authenticate("a" * 24)
        services.registry.models.create_registered_model(actor, name="m")
        inside = write_tree(tmp_path / "data" / "artifacts" / "m" / "planted", {"MLmodel": b"flavors: {}\n"})
        for source in (tmp_path / "data", tmp_path, inside):  # the data dir, a folder around it, a folder inside
            with pytest.raises(InvalidParameterError, match="overlaps the registry's own data"):
                services.registry.registration.create_model_version(actor, name="m", source=str(source))
        ok = write_tree(tmp_path / "models" / "churn", {"MLmodel": b"flavors: {}\n"})
        assert services.registry.registration.create_model_version(actor, name="m", source=str(ok)).version == 1
        assert entries(tmp_path / "data" / "artifacts" / ":staging") == []
    finally:
        services.close()


def test_start_up_sweeps_only_stale_staging_directories(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "store")
    with store.staging() as live:
        (live / "f").write_bytes(b"x")
        stale = tmp_path / "store" / ":staging" / "killed"
        stale.mkdir()
        (stale / "half-copied").write_bytes(b"x")
        for path in (stale / "half-copied", stale):
            os.utime(path, (0, 0))

        assert [(removed.location, removed.size) for removed in store.sweep_staging(older_than_s=3600)] == [
            (str(stale), 1)]

        assert not stale.exists() and (live / "f").exists()
