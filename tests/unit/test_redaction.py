"""``redact_url``: credentials in URLs never reach a message."""

from __future__ import annotations

import pytest

from registry_store.redaction import redact_url


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("http://bot:s3cret@tracking:5000", "http://***@tracking:5000"),
        ("https://token@host/path?q=1", "https://***@host/path?q=1"),
        ("http://user:p@ss@host:1/x", "http://***@host:1/x"),
        ("http://127.0.0.1:5005", "http://127.0.0.1:5005"),
        ("at http://a:b@one/ and https://c:d@two is down", "at http://***@one/ and https://***@two is down"),
        ("mail user@example.com", "mail user@example.com"),
        ("http://host/path@not-userinfo", "http://host/path@not-userinfo"),
    ],
)
def test_userinfo_is_replaced_and_nothing_else_changes(text: str, shown: str) -> None:
    assert redact_url(text) == shown
