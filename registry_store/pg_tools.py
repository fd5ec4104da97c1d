"""``pg_dump`` and ``pg_restore`` for backups of a PostgreSQL registry: finding them and running them.

A tool is taken from PATH or ``/usr/lib/postgresql/<major>/bin`` (newest first) and must be at least
the server's major version (``pg_dump`` refuses an older one anyway, less clearly). The connection
comes from the SQLAlchemy URL: its password travels in ``PGPASSWORD``, never on a command line, and
no error message repeats the URL.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Connection, text
from sqlalchemy.engine import URL

from registry_store.errors import UnavailableError

__all__ = ["PgTool", "find_tool", "libpq_connection", "run_tool", "server_major", "tool_major"]

_VERSION = re.compile(r"\(PostgreSQL\)\s+(\d+)")
_INSTALLED = "/usr/lib/postgresql/*/bin"
_VERSION_TIMEOUT_S = 30


@dataclass(frozen=True)
class PgTool:
    """An installed ``pg_dump``/``pg_restore`` and the version line it prints."""

    path: str
    major: int
    version: str


def tool_major(version_line: str) -> int | None:
    """The major version in ``pg_dump (PostgreSQL) 15.18 (Debian …)``; None if there is none."""
    match = _VERSION.search(version_line)
    return int(match.group(1)) if match else None


def _candidates(name: str) -> list[str]:
    on_path = shutil.which(name)
    installed = sorted(glob.glob(os.path.join(_INSTALLED, name)),
                       key=lambda p: int(m.group(1)) if (m := re.search(r"/(\d+)/bin/", p)) else 0, reverse=True)
    return [*([on_path] if on_path else []), *installed]


def _describe(path: str) -> PgTool | None:
    try:
        done = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=_VERSION_TIMEOUT_S,
                              check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    line = done.stdout.strip()
    major = tool_major(line)
    return PgTool(path, major, line) if done.returncode == 0 and major is not None else None


def find_tool(name: str, at_least: int) -> PgTool:
    """The first ``name`` of major ``at_least`` or newer: on PATH, then ``/usr/lib/postgresql/*/bin`` (newest first)."""
    found = [tool for path in _candidates(name) if (tool := _describe(path)) is not None]
    for tool in found:
        if tool.major >= at_least:
            return tool
    seen = ", ".join(f"{t.path} ({t.major})" for t in found) or "none"
    raise UnavailableError(f"no {name} of PostgreSQL {at_least} or newer on PATH or in {_INSTALLED} "
                           f"(found: {seen}); install the PostgreSQL client tools of the server's version")


def server_major(connection: Connection) -> int:
    """The connected server's major version."""
    return int(connection.execute(text("SHOW server_version_num")).scalar_one()) // 10000


def _quote(value: str) -> str:
    """A libpq connection-string value: single-quoted, backslash and quote escaped."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def libpq_connection(url: URL) -> tuple[str, dict[str, str]]:
    """A libpq connection string for ``url`` (host, port, user, database and query parameters such as
    ``sslmode``) and the environment carrying its password."""
    parts: dict[str, str] = {}
    if url.host:
        parts["host"] = url.host
    if url.port:
        parts["port"] = str(url.port)
    if url.username:
        parts["user"] = url.username
    if url.database:
        parts["dbname"] = url.database
    for key, value in url.query.items():
        parts[key] = value if isinstance(value, str) else value[-1]
    env = {"PGPASSWORD": url.password} if url.password else {}
    return " ".join(f"{key}={_quote(value)}" for key, value in parts.items()), env


def run_tool(tool: PgTool, arguments: list[str], url: URL) -> None:
    """Run ``tool`` with ``arguments`` against ``url`` (``--dbname`` added); its last error line on failure."""
    conninfo, password = libpq_connection(url)
    done = subprocess.run(
        [tool.path, *arguments, "--no-password", "--dbname", conninfo],
        env={**os.environ, **password}, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False,
    )
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        raise UnavailableError(f"{Path(tool.path).name} failed (exit {done.returncode}): "
                               f"{lines[-1] if lines else 'no message'}")
