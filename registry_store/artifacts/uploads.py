"""A client's upload, unpacked safely: regular files and directories only, below a directory the server chose."""

from __future__ import annotations

import shutil
import tarfile
from pathlib import Path

from registry_store.artifacts._tree import CHUNK_SIZE, safe_relpath
from registry_store.errors import InvalidParameterError

__all__ = ["MAX_UPLOAD_FILES", "unpack_tar"]

MAX_UPLOAD_FILES = 100_000


def unpack_tar(archive: Path, dest: Path) -> None:
    """Unpack the regular files and directories of ``archive`` below ``dest`` (created).

    Refuses absolute names, ``..`` and empty segments, links, devices, FIFOs, sparse files, duplicate
    files and archives with no file; ``dest`` only ever holds real directories made here, so nothing can
    be written outside it.
    """
    dest.mkdir()
    files = 0
    try:
        with tarfile.open(archive, mode="r:") as tar:
            for member in tar:
                name = member.name.removeprefix("./").rstrip("/")
                if member.isdir() and name in ("", "."):
                    continue  # the archive's root
                rel = safe_relpath(name, "upload member name")
                target = dest.joinpath(*rel.parts)
                if member.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                if not member.isreg() or member.issparse():  # a sparse member could unpack far beyond the bound
                    raise InvalidParameterError(
                        f"upload refused: '{member.name}' is a {_kind(member)}; only regular files and directories"
                    )
                files += 1
                if files > MAX_UPLOAD_FILES:
                    raise InvalidParameterError(f"upload refused: more than {MAX_UPLOAD_FILES} files")
                target.parent.mkdir(parents=True, exist_ok=True)
                source = tar.extractfile(member)
                assert source is not None, "a regular member has contents"
                with source, target.open("xb") as out:
                    shutil.copyfileobj(source, out, CHUNK_SIZE)
    except tarfile.TarError as exc:
        raise InvalidParameterError(f"the upload is not a valid uncompressed tar stream: {exc}") from None
    except (FileExistsError, NotADirectoryError) as exc:
        raise InvalidParameterError(f"upload refused: '{Path(exc.filename or '').name}' appears twice "
                                    "(as a file and again as a file or directory)") from None
    if not files:
        raise InvalidParameterError("upload refused: the archive holds no file")


def _kind(member: tarfile.TarInfo) -> str:
    if member.issparse():
        return "sparse file"
    if member.issym():
        return "symlink"
    if member.islnk():
        return "hard link"
    if member.isfifo():
        return "FIFO"
    if member.isdev():
        return "device"
    return "special member"
