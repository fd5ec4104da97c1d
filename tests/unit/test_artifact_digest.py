"""tree_digest: a deterministic content hash over relative paths and file contents."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from registry_store.artifacts import tree_digest
from registry_store.errors import InvalidParameterError
from tests.fixtures.trees import write_tree

FILES = {"MLmodel": b"flavors: {}\n", "data/model.pkl": b"\x00\x01weights", "data/extra/notes.txt": b"hi"}


def test_digest_is_sha256_over_sorted_paths_and_content_hashes(tmp_path: Path) -> None:
    write_tree(tmp_path, FILES)
    expected = hashlib.sha256()
    for rel in sorted(FILES):
        expected.update(rel.encode() + b"\x00" + hashlib.sha256(FILES[rel]).hexdigest().encode() + b"\n")

    assert tree_digest(tmp_path) == f"sha256:{expected.hexdigest()}"


def test_identical_trees_in_different_places_have_the_same_digest(tmp_path: Path) -> None:
    first = write_tree(tmp_path / "a", FILES)
    second = write_tree(tmp_path / "b", dict(reversed(list(FILES.items()))))

    assert tree_digest(first) == tree_digest(second)


def test_changing_one_byte_changes_the_digest(tmp_path: Path) -> None:
    tree = write_tree(tmp_path, FILES)
    before = tree_digest(tree)
    (tree / "data" / "model.pkl").write_bytes(b"\x00\x01weightS")

    assert tree_digest(tree) != before


def test_renaming_or_moving_a_file_changes_the_digest(tmp_path: Path) -> None:
    base = tree_digest(write_tree(tmp_path / "base", {"a/b.txt": b"x"}))

    assert tree_digest(write_tree(tmp_path / "renamed", {"a/c.txt": b"x"})) != base
    assert tree_digest(write_tree(tmp_path / "moved", {"b.txt": b"x"})) != base


def test_empty_directories_do_not_count(tmp_path: Path) -> None:
    tree = write_tree(tmp_path, FILES)
    before = tree_digest(tree)
    (tree / "empty" / "nested").mkdir(parents=True)

    assert tree_digest(tree) == before


def test_a_single_file_digests_like_a_directory_holding_only_that_file(tmp_path: Path) -> None:
    single = write_tree(tmp_path / "one", {"model.pkl": b"payload"}) / "model.pkl"

    assert tree_digest(single) == tree_digest(single.parent)
    assert tree_digest(single).startswith("sha256:")


def test_digest_of_a_large_file_matches_hashing_it_whole(tmp_path: Path) -> None:
    content = os.urandom(3 * 1024 * 1024 + 17)
    tree = write_tree(tmp_path, {"big.bin": content})
    outer = hashlib.sha256(b"big.bin\x00" + hashlib.sha256(content).hexdigest().encode() + b"\n")

    assert tree_digest(tree) == f"sha256:{outer.hexdigest()}"


def test_symlinks_in_the_tree_are_refused(tmp_path: Path) -> None:
    tree = write_tree(tmp_path / "tree", {"a.txt": b"a"})
    (tree / "link").symlink_to(tree / "a.txt")

    with pytest.raises(InvalidParameterError, match="symlink"):
        tree_digest(tree)


def test_a_missing_path_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidParameterError, match="does not exist"):
        tree_digest(tmp_path / "missing")
