"""What identifies a model version on every side of the wire: its stage names and its artifact digest.

The registry computes the digest at registration and a sign-off binds to it; clients recompute it
over the files they download. Both import it from here, so there is one definition.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

__all__ = ["ALL_STAGES", "ARCHIVED", "NONE", "PRODUCTION", "STAGING", "manifest_digest"]

NONE = "None"
STAGING = "Staging"
PRODUCTION = "Production"
ARCHIVED = "Archived"
ALL_STAGES = (NONE, STAGING, PRODUCTION, ARCHIVED)


def manifest_digest(manifest: Mapping[str, str]) -> str:
    """``sha256:<hex>`` over the sorted paths and content hashes (``{relative posix path: hex sha256}``).

    Each file contributes ``<path> NUL <hex sha256> LF``; paths cannot contain NUL, so the
    encoding is unambiguous.
    """
    outer = hashlib.sha256()
    for rel in sorted(manifest):
        outer.update(rel.encode("utf-8", "surrogateescape"))
        outer.update(b"\x00")
        outer.update(manifest[rel].encode("ascii"))
        outer.update(b"\n")
    return f"sha256:{outer.hexdigest()}"
