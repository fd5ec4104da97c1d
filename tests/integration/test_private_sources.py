"""The registry's own files are never a source: by symlink, hard link or path; deep trees are a clean 400."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from calabi.bootstrap import Services, build_services, prepare
from calabi.settings import Settings
from registry_store.artifacts._tree import MAX_TREE_DEPTH, tree_files
from registry_store.errors import InvalidParameterError
from registry_store.users import SYSTEM_ACTOR
from tests.fixtures.trees import deep_tree, flatten

DEEP = 1_100  # the reported depth: past the interpreter's recursion limit


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Services]:
    """A registry whose data dir lies inside its only source root (the reported setup)."""
    settings = Settings(data_dir=tmp_path / "data", local_source_roots=[tmp_path], admin_token=SecretStr("t" * 32))
    prepare(settings)
    built = build_services(settings)
    built.registry.models.create_registered_model(SYSTEM_ACTOR, name="m")
    yield built
    built.close()


def register(services: Services, source: Path) -> None:
    services.registry.registration.create_model_version(SYSTEM_ACTOR, name="m", source=str(source))


def model_dir(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    path.mkdir()
    (path / "MLmodel").write_text("flavors: {}\n")
    return path


@pytest.mark.parametrize("secret", ["admin-token", "calabi.db", "server-key"])
def test_a_symlink_to_a_private_file_is_refused(services: Services, tmp_path: Path, secret: str) -> None:
    target = tmp_path / "data" / secret
    (tmp_path / "data" / "admin-token").write_text("t" * 32)
    assert target.exists()
    source = model_dir(tmp_path, "linked")
    (source / "stolen").symlink_to(target)
    with pytest.raises(InvalidParameterError, match="registry's own data"):
        register(services, source)


@pytest.mark.parametrize("secret", ["calabi.db", "server-key"])
def test_a_hard_link_to_a_private_file_is_refused(services: Services, tmp_path: Path, secret: str) -> None:
    source = model_dir(tmp_path, "hard")
    os.link(tmp_path / "data" / secret, source / "copy")
    with pytest.raises(InvalidParameterError, match="registry's own data"):
        register(services, source)
    os.link(tmp_path / "data" / secret, tmp_path / "single")
    with pytest.raises(InvalidParameterError, match="registry's own data"):
        register(services, tmp_path / "single")


def test_the_data_dir_itself_is_refused(services: Services, tmp_path: Path) -> None:
    with pytest.raises(InvalidParameterError, match="registry's own data"):
        register(services, tmp_path / "data")


def test_an_ordinary_source_next_to_the_data_dir_registers(services: Services, tmp_path: Path) -> None:
    register(services, model_dir(tmp_path, "fine"))


def test_a_deep_source_tree_is_a_clean_refusal(services: Services, tmp_path: Path) -> None:
    source = model_dir(tmp_path, "deep")
    deep_tree(source, DEEP)
    try:
        with pytest.raises(InvalidParameterError, match=f"deeper than {MAX_TREE_DEPTH}"):
            register(services, source)
        with pytest.raises(InvalidParameterError, match=f"deeper than {MAX_TREE_DEPTH}"):
            tree_files(source)
    finally:
        flatten(source, DEEP)


def test_prepare_tightens_a_data_dir_left_readable_by_an_older_version(tmp_path: Path) -> None:
    data = tmp_path / "old-data"
    (data / "mlflow").mkdir(parents=True)
    for name in ("admin-token", "worker.log", "temporal.db"):
        (data / name).write_text("x")
        (data / name).chmod(0o644)
    (data / "mlflow").chmod(0o755)
    data.chmod(0o755)
    prepare(Settings(data_dir=data, admin_token=SecretStr("t" * 32)))
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert stat.S_IMODE((data / "mlflow").stat().st_mode) == 0o700
    for name in ("admin-token", "worker.log", "temporal.db", "calabi.db", "server-key"):
        assert stat.S_IMODE((data / name).stat().st_mode) == 0o600, name


def test_refusing_a_hard_link_to_the_database_keeps_this_process_s_sqlite_locks(
    services: Services, tmp_path: Path
) -> None:
    """POSIX locks belong to a process and an inode: closing any readable descriptor of the database drops every
    lock SQLite holds on it in this process. Another process closing its connection then believes it is the
    last one and deletes the WAL under this process's open connections, which go on reading a stale copy (a
    deleted token kept working)."""
    database = tmp_path / "data" / "calabi.db"
    reader = sqlite3.connect(database, isolation_level=None)
    reader.execute("SELECT count(*) FROM users").fetchall()  # this process holds the database open
    source = model_dir(tmp_path, "hard-db")
    os.link(database, source / "copy.db")
    with pytest.raises(InvalidParameterError, match="registry's own data"):
        register(services, source)
    subprocess.run(  # another process opens, writes and closes: only the last connection removes the WAL
        [sys.executable, "-c", "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
         "c.execute('PRAGMA user_version = 7'); c.commit(); c.close()", str(database)],
        check=True, timeout=60,
    )
    still_shared = database.with_name("calabi.db-wal").exists()
    reader.close()

    assert still_shared
