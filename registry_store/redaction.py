"""Keeping credentials out of messages: URLs are shown without their ``user:password@``."""

from __future__ import annotations

import re

__all__ = ["redact_url"]

_USERINFO = re.compile(r"(://)[^/?#\s]*@")


def redact_url(text: str) -> str:
    """``text`` (a URL, or a message naming URLs) with every URL's userinfo replaced by ``***``."""
    return _USERINFO.sub(r"\1***@", text)
