"""Tokens saved by ``calabi login``: one JSON file, private to the user, keyed by server URL.

``$XDG_CONFIG_HOME/calabi/credentials`` (else ``~/.config/calabi/credentials``), mode 0600,
replaced atomically on every change.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = ["credentials_path", "save_token", "saved_token"]


def credentials_path() -> Path:
    """Where saved tokens live."""
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "calabi" / "credentials"


def _read() -> dict[str, str]:
    try:
        document = json.loads(credentials_path().read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(document, dict):
        return {}
    return {str(url): token for url, token in document.items() if isinstance(token, str)}


def saved_token(url: str) -> str | None:
    """The token saved for ``url`` (a normalised server URL), if any."""
    return _read().get(url)


def save_token(url: str, token: str) -> Path:
    """Save ``token`` for ``url`` (replacing an older one); returns the file written."""
    path = credentials_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tokens = {**_read(), url: token}
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(tokens, handle, indent=2, sort_keys=True)
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path
