"""The pure parts of backup, restore and verify-store: libpq connection strings, PostgreSQL tool choice,
store keys, and one tree checked against its recorded digests (a local store in a temporary directory)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from registry_store.artifact_manifest import RecordedTree
from registry_store.artifacts import LocalArtifactStore, manifest_digest
from registry_store.backup_format import store_key
from registry_store.errors import UnavailableError
from registry_store.pg_tools import find_tool, libpq_connection, tool_major
from registry_store.store_verification import check_tree
from tests.fixtures.trees import write_tree

FILES = {"MLmodel": b"flavors: {}\n", "data/model.pkl": b"\x80\x04pickle"}
FILES_DIGESTS = {rel: hashlib.sha256(content).hexdigest() for rel, content in FILES.items()}


def test_the_password_goes_to_the_environment_and_values_are_quoted() -> None:
    url = make_url("postgresql+psycopg://calabi:s3cr%27t@db.internal:6432/reg?sslmode=verify-full&options=-c x='y'")
    conninfo, env = libpq_connection(url)
    assert env == {"PGPASSWORD": "s3cr't"}
    assert "s3cr" not in conninfo
    assert conninfo == ("host='db.internal' port='6432' user='calabi' dbname='reg' sslmode='verify-full' "
                        "options='-c x=\\'y\\''")
    assert libpq_connection(make_url("postgresql://localhost/reg")) == ("host='localhost' dbname='reg'", {})


def test_tool_versions_are_read_from_their_version_line() -> None:
    assert tool_major("pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)") == 15
    assert tool_major("pg_restore (PostgreSQL) 17beta1") == 17
    assert tool_major("something else 15.1") is None


def test_a_tool_older_than_the_server_is_passed_over(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old = tmp_path / "pg_dump"
    old.write_text("#!/bin/sh\necho 'pg_dump (PostgreSQL) 9.6.24'\n")
    old.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    chosen = find_tool("pg_dump", 10)  # the installed PostgreSQL's own, from /usr/lib/postgresql/*/bin
    assert chosen.path != str(old) and chosen.major >= 10
    with pytest.raises(UnavailableError, match=r"no pg_dump of PostgreSQL 999 or newer .*pg_dump \(9\)"):
        find_tool("pg_dump", 999)


def test_store_keys_come_from_the_root_uri() -> None:
    assert store_key("file:///srv/art", "file:///srv/art/churn%20v2/abc") == "churn v2/abc"
    assert store_key("s3://bucket/pre", "s3://bucket/pre/churn/abc") == "churn/abc"
    assert store_key("s3://bucket", "s3://bucket/churn/abc") == "churn/abc"
    assert store_key("file:///srv/art", "file:///srv/other/churn/abc") is None
    assert store_key("file:///srv/art", "file:///srv/art/") is None


def _recorded(store: LocalArtifactStore, key: str, files: dict[str, bytes], *, per_file: bool = True) -> RecordedTree:
    digests = {rel: hashlib.sha256(content).hexdigest() for rel, content in files.items()}
    location = store.root.joinpath(*key.split("/")).as_uri()
    return RecordedTree("churn", 1, key.rsplit("/", 1)[-1], location, manifest_digest(digests),
                        digests if per_file else None)


def _problems(store: LocalArtifactStore, tree: RecordedTree) -> list[tuple[str, str]]:
    return [(p.file, p.problem.split(" ")[0]) for p in check_tree(store, tree).problems]


def test_a_tree_is_checked_file_by_file_or_as_a_whole(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "store")
    intact = _recorded(store, "churn/a", FILES)
    write_tree(store.root / "churn" / "a", FILES)
    checked = check_tree(store, intact)
    assert (checked.problems, checked.files, checked.bytes) == ([], 2, sum(map(len, FILES.values())))

    damaged = _recorded(store, "churn/b", FILES)
    write_tree(store.root / "churn" / "b", {"MLmodel": b"changed", "extra.txt": b"x"})
    assert _problems(store, damaged) == [("data/model.pkl", "missing"), ("extra.txt", "not"), ("MLmodel", "sha256")]

    legacy = _recorded(store, "churn/c", FILES, per_file=False)
    write_tree(store.root / "churn" / "c", FILES)
    assert _problems(store, legacy) == []
    (store.root / "churn" / "c" / "MLmodel").write_bytes(b"changed")
    assert _problems(store, legacy) == [("", "its")]

    [gone] = check_tree(store, _recorded(store, "churn/gone", FILES)).problems
    assert "files are missing" in gone.problem
    other_root = (tmp_path / "other" / "churn" / "a").as_uri()
    elsewhere = RecordedTree("churn", 1, "a", other_root, intact.digest, FILES_DIGESTS)
    assert "outside the configured artifact store" in check_tree(store, elsewhere).problems[0].problem
    mislabelled = RecordedTree("churn", 1, "a", intact.location, "sha256:0", intact.files)
    [inconsistent] = check_tree(store, mislabelled).problems
    assert "do not add up to the recorded tree digest" in inconsistent.problem
