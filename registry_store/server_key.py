"""The server's secret key: a 0600 file in the data dir, outside the database.

Stealing the database alone then yields neither usable token hashes nor a way to re-sign the audit
chain. Every API replica must see the same file (a shared data dir, or the file copied). Keys for
separate purposes are derived from it with HMAC, so one key never serves two uses.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

__all__ = ["KEY_FILE", "ServerKey"]

KEY_FILE = "server-key"
_KEY_BYTES = 32


class ServerKey:
    """The key stored at ``path``, read (or created, exclusively and mode 0600) on first use."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._key: bytes | None = None

    def derive(self, purpose: str) -> bytes:
        """The sub-key for ``purpose`` (e.g. ``"tokens"``, ``"audit"``)."""
        return hmac.new(self._load(), purpose.encode(), hashlib.sha256).digest()

    def _load(self) -> bytes:
        if self._key is None:
            if not self.path.exists():
                self._create()
            key = bytes.fromhex(self.path.read_text().strip())
            if len(key) != _KEY_BYTES:
                raise ValueError(f"{self.path} does not hold a {_KEY_BYTES}-byte hex key")
            self._key = key
        return self._key

    def _create(self) -> None:
        """Write a fresh key to a private temporary file and link it into place: the first process wins."""
        staged = self.path.with_name(f".{self.path.name}.{secrets.token_hex(8)}")
        fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(secrets.token_bytes(_KEY_BYTES).hex() + "\n")
        try:
            os.link(staged, self.path)
        except FileExistsError:
            pass
        finally:
            staged.unlink()
