"""The audit chain's anchor: the last verified head, signed with the server key and kept outside the database.

Someone who can write the database (append-only triggers dropped) can re-hash the chain after an edit,
or delete the newest events and move the head back: the chain alone still verifies. Each successful
verification records ``(seq, hash)`` of the head in ``<data-dir>/audit-anchor`` (0600) with an HMAC
under the server key; the next verification requires the chain to still hold that event with that hash.
Run ``calabi audit verify`` regularly (e.g. from cron): events newer than the anchor are covered from
the next run on.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from registry_store.server_key import ServerKey

__all__ = ["ANCHOR_FILE", "AuditAnchor", "BadAnchorError"]

ANCHOR_FILE = "audit-anchor"


class BadAnchorError(Exception):
    """The anchor file is malformed or its signature does not match."""


class AuditAnchor:
    """Reads and advances the signed anchor at ``path``."""

    def __init__(self, path: Path, key: ServerKey) -> None:
        self.path = path
        self._key = key

    def sign(self, seq: int, head_hash: str) -> str:
        """HMAC-SHA256 of the head under the server's ``audit`` key."""
        return hmac.new(self._key.derive("audit"), f"{seq}:{head_hash}".encode(), hashlib.sha256).hexdigest()

    def load(self) -> tuple[int, str] | None:
        """The anchored ``(seq, hash)``; None before the first verification."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return None
        seq, _, rest = text.strip().partition(":")
        head_hash, _, signature = rest.partition(":")
        if not seq.isdigit() or not hmac.compare_digest(signature.encode(), self.sign(int(seq), head_hash).encode()):
            raise BadAnchorError(f"{self.path} is not a valid signed anchor")
        return int(seq), head_hash

    def advance(self, seq: int, head_hash: str) -> None:
        """Record a verified head (never moving the anchor back), atomically and mode 0600."""
        current = self.load()
        if current is not None and current[0] > seq:
            return
        staged = self.path.with_name(f".{self.path.name}.{secrets.token_hex(8)}")
        fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(f"{seq}:{head_hash}:{self.sign(seq, head_hash)}\n")
        os.replace(staged, self.path)
