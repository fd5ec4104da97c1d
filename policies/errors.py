"""``PolicyError``: a policy file that cannot be used, naming the file and the field."""

from __future__ import annotations

__all__ = ["PolicyError"]


class PolicyError(Exception):
    """A policy file is unreadable, not valid TOML, or fails validation.

    ``file`` is the path of the offending file; ``field`` the dotted field path
    (``production.metrics.direction``, list items as ``[0]``) or ``None`` when the
    problem is not tied to a field (TOML syntax, missing file).
    """

    def __init__(self, message: str, *, file: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.file = file
        self.field = field
