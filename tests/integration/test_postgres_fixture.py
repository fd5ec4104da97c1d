"""Smoke test for the PostgreSQL fixture (tests/fixtures/postgres.py)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from tests.fixtures.postgres import PostgresServer

pytestmark = pytest.mark.postgres


def test_server_url_points_at_loopback(postgres_server: PostgresServer) -> None:
    assert postgres_server.base_url == f"postgresql+psycopg://postgres@127.0.0.1:{postgres_server.port}"
    with postgres_server.connect() as conn:
        row = conn.execute("SELECT inet_server_addr()::text, current_setting('fsync')").fetchone()
    assert row is not None
    assert row[0].startswith("127.0.0.1")
    assert row[1] == "off"


def test_create_insert_select(postgres_url: str) -> None:
    engine = sa.create_engine(postgres_url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE model (id serial PRIMARY KEY, name text NOT NULL)"))
            conn.execute(sa.text("INSERT INTO model (name) VALUES (:a), (:b)"), {"a": "alpha", "b": "beta"})
        with engine.connect() as conn:
            names = conn.execute(sa.text("SELECT name FROM model ORDER BY id")).scalars().all()
        assert names == ["alpha", "beta"]
    finally:
        engine.dispose()


def test_databases_are_independent(postgres_server: PostgresServer, postgres_url: str) -> None:
    other_url = postgres_server.create_database()
    assert other_url != postgres_url
    assert other_url.startswith(postgres_server.base_url + "/")

    first, second = sa.create_engine(postgres_url), sa.create_engine(other_url)
    try:
        with first.begin() as conn:
            conn.execute(sa.text("CREATE TABLE only_here (x int)"))
            conn.execute(sa.text("INSERT INTO only_here VALUES (1)"))
        with second.connect() as conn:
            assert conn.execute(sa.text("SELECT to_regclass('only_here')")).scalar() is None
        with second.begin() as conn:  # the same name can be created independently
            conn.execute(sa.text("CREATE TABLE only_here (x int)"))
            assert conn.execute(sa.text("SELECT count(*) FROM only_here")).scalar() == 0
        with first.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM only_here")).scalar() == 1
    finally:
        first.dispose()
        second.dispose()
        postgres_server.drop_database(other_url)
