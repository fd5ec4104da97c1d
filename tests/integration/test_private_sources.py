"""The registry's own files are never a source: by symlink, hard link or path; deep trees are a clean 400."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from calabi.bootstrap import Services, build_services, prepare
from calabi.settings import Settings
from registry_store.artifacts._tree import MAX_TREE_DEPTH, tree_files
from registry_store.errors import InvalidParameterError
from registry_store.users import SYSTEM_ACTOR

DEEP = 1_100


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


def deep_tree(root: Path, depth: int) -> Path:
    """``root/d/d/…`` ``depth`` levels deep with a file at the bottom (built with relative paths: PATH_MAX)."""
    (root / "MLmodel").write_text("flavors: {}\n")
    fd = os.open(root, os.O_RDONLY)
    try:
        for _ in range(depth):
            os.mkdir("d", dir_fd=fd)
            child = os.open("d", os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = child
        with os.fdopen(os.open("leaf", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd), "w") as leaf:
            fd = -1
            leaf.write("x")
    finally:
        if fd >= 0:
            os.close(fd)
    return root


def flatten(root: Path, depth: int) -> None:
    """Cut a deep tree into one-level pieces (pytest's recursive clean-up could not remove it)."""
    for level in range(depth):
        piece = root.with_name(f"flat-{level}")
        os.rename(root / "d", piece)
        root = piece


def test_a_deep_source_tree_is_a_clean_refusal(services: Services, tmp_path: Path) -> None:
    source = deep_tree(model_dir(tmp_path, "deep"), DEEP)
    try:
        with pytest.raises(InvalidParameterError, match=f"deeper than {MAX_TREE_DEPTH}"):
            register(services, source)
        with pytest.raises(InvalidParameterError, match=f"deeper than {MAX_TREE_DEPTH}"):
            tree_files(source)
    finally:
        flatten(source, DEEP)
