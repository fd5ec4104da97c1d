"""No process of a running ``calabi serve`` holds the admin token in its environment."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tests.fixtures.servers import start_server, stop_server


def descendants(root: int) -> list[int]:
    """``root`` and every process below it (one pass over /proc per generation, bounded)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    found = [root]
    for _generation in range(8):
        found += [pid for pid, parent in parents.items() if parent in found and pid not in found]
    return found


def test_no_calabi_process_holds_the_admin_token(tmp_path: Path) -> None:
    server = start_server(tmp_path, workers=2, temporal=True)  # CALABI_ADMIN_TOKEN exported to `calabi serve`
    try:
        pids = descendants(server.process.pid)
        environments = {pid: Path(f"/proc/{pid}/environ").read_bytes() for pid in pids}
    finally:
        stop_server(server)

    assert len(pids) >= 5, "serve, two API workers, the Temporal dev server and the worker"
    assert server.env["CALABI_ADMIN_TOKEN"] == server.admin_token, "the token was in serve's initial environment"
    holding = [pid for pid, environ in environments.items() if server.admin_token.encode() in environ]
    assert holding == []
    assert all(b"CALABI_ADMIN_TOKEN=\0" in environ or b"CALABI_ADMIN_TOKEN" not in environ
               for environ in environments.values())


def test_a_replica_started_without_an_admin_token_mints_no_admin_credential(tmp_path: Path) -> None:
    """The first replica seeds the admin; a second one on the same database, with no ``CALABI_ADMIN_TOKEN``,
    used to generate a token of its own and add it to the admin (one more admin credential per replica)."""
    database = tmp_path / "shared.db"
    first = start_server(tmp_path / "first", database_url=f"sqlite:///{database}")
    try:
        second = start_server(tmp_path / "second", database_url=f"sqlite:///{database}",
                              extra_env={"CALABI_ADMIN_TOKEN": ""})  # empty: not set
        stop_server(second)
    finally:
        stop_server(first)

    assert "An admin already exists in this database: no admin token was made" in (
        tmp_path / "second" / "server.log").read_text()
    assert not (second.data_dir / "admin-token").exists()
    with sqlite3.connect(database) as db:
        tokens = db.execute("SELECT count(*) FROM tokens JOIN users ON users.id = tokens.user_id "
                            "WHERE users.name = 'admin'").fetchone()[0]
    assert tokens == 1, "only the configured token of the first replica"
