"""Bearer tokens at rest: HMAC-SHA256 under the server key, salted per token.

A token issued by Calabi reads ``<token id>.<secret>``: the id finds its row and one HMAC of the
row's salt and the secret is compared in constant time. A token without an id (``CALABI_ADMIN_TOKEN``,
tokens issued before salting) is stored as the HMAC of the whole token with the empty salt, so it is
found by that keyed hash; rows still holding an unsalted SHA-256 (salt NULL, written before
migration 0007) are accepted once and rehashed on that first use.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from registry_store.server_key import ServerKey

__all__ = ["TokenHasher", "legacy_hash", "split_token"]

_MAX_ID_DIGITS = 18
_SECRET_BYTES = 32


def split_token(token: str) -> tuple[int, str] | None:
    """``(token id, secret)`` of a token in the ``<id>.<secret>`` form, else None."""
    id_part, dot, secret = token.partition(".")
    if dot and secret and id_part.isascii() and id_part.isdigit() and len(id_part) <= _MAX_ID_DIGITS:
        return int(id_part), secret
    return None


def legacy_hash(token: str) -> str:
    """The unsalted SHA-256 that tokens were stored as before migration 0007."""
    return hashlib.sha256(token.encode()).hexdigest()


class TokenHasher:
    """Digests of tokens under the server's ``tokens`` key."""

    def __init__(self, key: ServerKey) -> None:
        self._server_key = key
        self._key: bytes | None = None

    def digest(self, salt: str, secret: str) -> str:
        """HMAC-SHA256 of ``salt`` and ``secret``; the empty salt is the keyed hash of a bare token."""
        if self._key is None:
            self._key = self._server_key.derive("tokens")
        return hmac.new(self._key, f"{salt}\0{secret}".encode(), hashlib.sha256).hexdigest()

    def matches(self, stored: str, salt: str | None, secret: str) -> bool:
        """Whether ``secret`` hashes to ``stored`` under ``salt`` (None: the legacy SHA-256), in constant time."""
        expected = legacy_hash(secret) if salt is None else self.digest(salt, secret)
        return hmac.compare_digest(stored.encode(), expected.encode())

    @staticmethod
    def new_secret() -> tuple[str, str]:
        """A fresh ``(salt, secret)`` pair for a token Calabi issues."""
        return secrets.token_hex(16), secrets.token_urlsafe(_SECRET_BYTES)
