"""Webhook secrets at rest: AES-GCM under a key derived from the server key.

A webhook's secret must be recoverable (every delivery is signed with it), so it is encrypted, not
hashed; the database alone does not reveal it. No API ever returns it.
"""

from __future__ import annotations

import base64
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from registry_store.server_key import ServerKey

__all__ = ["SecretBox"]

_NONCE_BYTES = 12


class SecretBox:
    """Encrypts and decrypts webhook secrets with the server key's ``webhook-secrets`` sub-key."""

    def __init__(self, key: ServerKey) -> None:
        self._key = key

    def seal(self, secret: str) -> str:
        """``secret`` encrypted (base64 of nonce + ciphertext); the empty secret stays empty."""
        if not secret:
            return ""
        nonce = os.urandom(_NONCE_BYTES)
        sealed = AESGCM(self._key.derive("webhook-secrets")).encrypt(nonce, secret.encode(), b"webhook")
        return base64.b64encode(nonce + sealed).decode()

    def open(self, sealed: str) -> str:
        """The secret ``seal`` encrypted ("" for none); ValueError when the server key is not the one it used."""
        if not sealed:
            return ""
        raw = base64.b64decode(sealed)
        try:
            plain = AESGCM(self._key.derive("webhook-secrets")).decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:],
                                                                        b"webhook")
        except InvalidTag as exc:
            raise ValueError("the webhook secret was sealed under another server key") from exc
        return plain.decode()
