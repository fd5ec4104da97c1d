"""The search query layer against a real database built by the project's migrations.

Runs on SQLite (engine from ``make_engine``: ``case_sensitive_like=ON``) and, under the
``postgres`` marker, on a throw-away PostgreSQL, with the same queries the service runs.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from sqlalchemy import Engine, func
from sqlmodel import Session, col, select

from registry_store import search
from registry_store.db import make_engine, upgrade_database
from registry_store.errors import InvalidParameterError
from registry_store.tables import ModelVersionRow, ModelVersionTagRow, RegisteredModelRow, RegisteredModelTagRow

PROMPT = "mlflow.prompt.is_prompt"

# name -> (last_updated_timestamp, tags)
MODELS: dict[str, tuple[int, dict[str, str]]] = {
    "Alpha": (100, {"team": "ML"}),
    "alpha2": (300, {"team": "ml", "env": "prod"}),
    "beta": (200, {}),
    "a_b": (200, {"team": "data", "note": "50% off_x"}),
    "prompt1": (50, {PROMPT: "true"}),
    "not_prompt": (60, {PROMPT: "false"}),
}
# (model, version, creation_timestamp, last_updated_timestamp, run_id, source, tags)
VERSIONS: list[tuple[str, int, int, int, str, str, dict[str, str]]] = [
    ("alpha2", 1, 10, 10, "r1", "s3://b/alpha2/1", {"ok": "yes"}),
    ("alpha2", 2, 20, 40, "r2", "s3://b/alpha2/2", {}),
    ("alpha2", 3, 30, 20, "r1", "S3://B/alpha2/3", {"ok": "no"}),
    ("beta", 1, 5, 40, "r3", "file:///x", {}),
    ("beta", 2, 25, 40, "r2", "s3://b/beta/2", {"ok": "Yes"}),
]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    url = (
        f"sqlite:///{tmp_path / 'registry.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    upgrade_database(url)
    eng = make_engine(url, pool_size=2)
    with Session(eng) as session:
        ids: dict[str, int] = {}
        for name, (updated, tags) in MODELS.items():
            row = RegisteredModelRow(name=name, creation_timestamp=1, last_updated_timestamp=updated)
            session.add(row)
            session.flush()
            assert row.id is not None
            ids[name] = row.id
            session.add_all(RegisteredModelTagRow(model_id=row.id, key=k, value=v) for k, v in tags.items())
        for model, number, created, updated, run_id, source, tags in VERSIONS:
            mv = ModelVersionRow(
                model_id=ids[model], version=number, source=source, run_id=run_id, storage_location="x",
                digest="d", creation_timestamp=created, last_updated_timestamp=updated,
            )  # fmt: skip
            session.add(mv)
            session.flush()
            assert mv.id is not None
            session.add_all(ModelVersionTagRow(version_id=mv.id, key=k, value=v) for k, v in tags.items())
        session.commit()
    yield eng
    eng.dispose()


def models(
    engine: Engine, filter_string: str | None = None, order_by: Sequence[str] | None = None,
    offset: int = 0, limit: int = 1000,
) -> list[str]:  # fmt: skip
    """Run the model query exactly as the service does."""
    spec = search.registered_model_search(filter_string, order_by)
    with Session(engine) as session:
        rows = session.exec(
            select(RegisteredModelRow).where(*spec.conditions).order_by(*spec.order).offset(offset).limit(limit)
        ).all()
    return [r.name for r in rows]


def versions(
    engine: Engine, filter_string: str | None = None, order_by: Sequence[str] | None = None
) -> list[tuple[str, int]]:
    """Run the version query exactly as the service does."""
    spec = search.model_version_search(filter_string, order_by)
    with Session(engine) as session:
        rows = session.exec(
            select(ModelVersionRow, RegisteredModelRow.name)
            .join(RegisteredModelRow, col(RegisteredModelRow.id) == col(ModelVersionRow.model_id))
            .where(*spec.conditions)
            .order_by(*spec.order)
        ).all()
    return [(name, mv.version) for mv, name in rows]


# --------------------------------------------------------------------------- registered models


@pytest.mark.parametrize(
    ("filter_string", "expected"),
    [
        ("name = 'alpha2'", ["alpha2"]),
        ("name = 'ALPHA2'", []),  # = is case-sensitive
        ("name != 'beta'", ["Alpha", "a_b", "alpha2", "not_prompt", "prompt1"]),
        ("name LIKE 'al%'", ["alpha2"]),  # LIKE is case-sensitive
        ("name LIKE 'Al%'", ["Alpha"]),
        ("name ILIKE 'AL%'", ["Alpha", "alpha2"]),  # ILIKE is not
        ("name ILIKE 'alpha'", ["Alpha"]),
        ("name LIKE 'a_%'", ["a_b", "alpha2"]),  # _ is a wildcard ...
        ("name LIKE 'a\\_%'", ["a_b"]),  # ... unless escaped
        ("name LIKE '%2'", ["alpha2"]),
        ("name IN ('beta', 'Alpha', 'nope')", ["Alpha", "beta"]),
        ("name NOT IN ('beta', 'Alpha')", ["a_b", "alpha2", "not_prompt", "prompt1"]),
        ("name LIKE 'a%' AND name != 'alpha2'", ["a_b"]),
    ],
)
def test_model_attribute_filters(engine: Engine, filter_string: str, expected: list[str]) -> None:
    assert models(engine, filter_string) == expected


@pytest.mark.parametrize(
    ("filter_string", "expected"),
    [
        ("tag.team = 'ml'", ["alpha2"]),
        ("tags.team != 'ml'", ["Alpha", "a_b"]),  # models without the tag never match
        ("tag.team LIKE 'm%'", ["alpha2"]),
        ("tag.team ILIKE 'm%'", ["Alpha", "alpha2"]),
        ("tag.note LIKE '50\\% off\\_x'", ["a_b"]),
        ("tag.note LIKE '50\\% off\\_y'", []),
        ("tag.team ILIKE 'ML' AND tag.env = 'prod'", ["alpha2"]),
        ("tag.team = 'ml' AND tag.env = 'dev'", []),
        ("tag.missing != 'x'", []),
        (f"tag.`{PROMPT}` = 'true'", ["prompt1"]),
        (f"tag.`{PROMPT}` != 'true'", ["Alpha", "a_b", "alpha2", "beta", "not_prompt"]),
        (f"tag.`{PROMPT}` = 'false'", ["Alpha", "a_b", "alpha2", "beta", "not_prompt"]),
        (f"tag.\"{PROMPT}\" != 'true'", ["Alpha", "a_b", "alpha2", "beta", "not_prompt"]),
        (f"tags.{PROMPT} != 'true'", ["Alpha", "a_b", "alpha2", "beta", "not_prompt"]),
        (f"tag.`{PROMPT}` LIKE 't%'", ["prompt1"]),
        # exactly what the stock client sends
        (f"name LIKE 'a%' AND tag.`{PROMPT}` != 'true'", ["a_b", "alpha2"]),
        (f"name LIKE 'p%' AND tag.`{PROMPT}` != 'true'", []),
    ],
)
def test_model_tag_filters(engine: Engine, filter_string: str, expected: list[str]) -> None:
    assert models(engine, filter_string) == expected


@pytest.mark.parametrize(
    ("order_by", "expected"),
    [
        (None, ["Alpha", "a_b", "alpha2", "beta", "not_prompt", "prompt1"]),
        (["name DESC"], ["prompt1", "not_prompt", "beta", "alpha2", "a_b", "Alpha"]),
        # both timestamp keys sort by last_updated_timestamp; name ASC breaks the a_b/beta tie
        (["timestamp DESC"], ["alpha2", "a_b", "beta", "Alpha", "not_prompt", "prompt1"]),
        (["last_updated_timestamp"], ["prompt1", "not_prompt", "Alpha", "a_b", "beta", "alpha2"]),
        (["last_updated_timestamp ASC", "name DESC"], ["prompt1", "not_prompt", "Alpha", "beta", "a_b", "alpha2"]),
    ],
)
def test_model_ordering(engine: Engine, order_by: list[str] | None, expected: list[str]) -> None:
    assert models(engine, None, order_by) == expected


# --------------------------------------------------------------------------- model versions

ALL_BY_DEFAULT = [("alpha2", 2), ("beta", 2), ("beta", 1), ("alpha2", 3), ("alpha2", 1)]


@pytest.mark.parametrize(
    ("filter_string", "expected"),
    [
        (None, ALL_BY_DEFAULT),
        ("name = 'alpha2' AND version_number > 1", [("alpha2", 2), ("alpha2", 3)]),
        ("name = 'alpha2' AND version_number = 2", [("alpha2", 2)]),
        ("name = 'alpha2' AND version_number != 2", [("alpha2", 3), ("alpha2", 1)]),
        ("name = 'alpha2' AND version_number < 2", [("alpha2", 1)]),
        ("name = 'alpha2' AND version_number <= 2", [("alpha2", 2), ("alpha2", 1)]),
        ("version_number >= 2", [("alpha2", 2), ("beta", 2), ("alpha2", 3)]),
        ("version_number > 2147483646", []),
        ("version_number > -2147483648", ALL_BY_DEFAULT),
        ("version_number > -5 AND version_number < 2", [("beta", 1), ("alpha2", 1)]),
        ("name ILIKE 'BETA'", [("beta", 2), ("beta", 1)]),
        ("name IN ('beta')", [("beta", 2), ("beta", 1)]),
        ("name NOT IN ('beta')", [("alpha2", 2), ("alpha2", 3), ("alpha2", 1)]),
        ("run_id IN ('r1', 'r3')", [("beta", 1), ("alpha2", 3), ("alpha2", 1)]),
        ("run_id NOT IN ('r1')", [("alpha2", 2), ("beta", 2), ("beta", 1)]),
        ("run_id = 'r2'", [("alpha2", 2), ("beta", 2)]),
        ("source_path LIKE 's3://%'", [("alpha2", 2), ("beta", 2), ("alpha2", 1)]),
        ("source_path ILIKE 's3://%'", [("alpha2", 2), ("beta", 2), ("alpha2", 3), ("alpha2", 1)]),
        ("source_path = 'file:///x'", [("beta", 1)]),
        ("tags.ok = 'yes'", [("alpha2", 1)]),
        ("tags.ok != 'yes'", [("beta", 2), ("alpha2", 3)]),  # versions without the tag never match
        ("tag.ok ILIKE 'YES'", [("beta", 2), ("alpha2", 1)]),
        ("tag.ok LIKE 'y%' AND run_id = 'r1'", [("alpha2", 1)]),
        (f"tag.`{PROMPT}` != 'true'", ALL_BY_DEFAULT),
    ],
)
def test_version_filters(engine: Engine, filter_string: str | None, expected: list[tuple[str, int]]) -> None:
    assert versions(engine, filter_string) == expected


@pytest.mark.parametrize(
    ("order_by", "expected"),
    [
        (None, ALL_BY_DEFAULT),
        ([], ALL_BY_DEFAULT),
        (["version_number ASC"], [("alpha2", 1), ("beta", 1), ("alpha2", 2), ("beta", 2), ("alpha2", 3)]),
        (["version_number DESC", "name DESC"], [("alpha2", 3), ("beta", 2), ("alpha2", 2), ("beta", 1), ("alpha2", 1)]),
        (["name DESC"], [("beta", 2), ("beta", 1), ("alpha2", 3), ("alpha2", 2), ("alpha2", 1)]),
        (["name"], [("alpha2", 3), ("alpha2", 2), ("alpha2", 1), ("beta", 2), ("beta", 1)]),
        (["creation_timestamp"], [("beta", 1), ("alpha2", 1), ("alpha2", 2), ("beta", 2), ("alpha2", 3)]),
        (["last_updated_timestamp asc"], [("alpha2", 1), ("alpha2", 3), ("alpha2", 2), ("beta", 2), ("beta", 1)]),
    ],
)
def test_version_ordering(engine: Engine, order_by: list[str] | None, expected: list[tuple[str, int]]) -> None:
    assert versions(engine, None, order_by) == expected


# --------------------------------------------------------------------------- paging and safety


def page(engine: Engine, token: str | None, max_results: object, order_by: list[str]) -> tuple[list[str], str | None]:
    """One page the way the service builds it: fetch ``limit + 1`` rows, token only if more exist."""
    limit = search.validate_max_results(max_results, limit=1000)
    offset = search.decode_page_token(token)
    rows = models(engine, None, order_by, offset=offset, limit=limit + 1)
    return rows[:limit], search.encode_page_token(offset + limit) if len(rows) > limit else None


@pytest.mark.parametrize("max_results", [1, "2", 4, 5, 6, 1000])
def test_paging_walks_every_model_once(engine: Engine, max_results: object) -> None:
    order = ["timestamp DESC"]
    seen: list[str] = []
    token: str | None = None
    for _ in range(10):
        items, token = page(engine, token, max_results, order)
        seen.extend(items)
        if token is None:
            break
    assert token is None
    assert seen == models(engine, None, order)


def test_paging_token_past_the_end_is_an_empty_last_page(engine: Engine) -> None:
    assert page(engine, search.encode_page_token(100), 10, []) == ([], None)


def test_injection_attempts_are_literal_or_rejected(engine: Engine) -> None:
    assert models(engine, "name = 'x''; DROP TABLE registered_models; --'") == []
    assert models(engine, "name = 'a'' OR ''1''=''1'") == []
    assert models(engine, "name LIKE '%'' OR 1=1 --'") == []
    assert versions(engine, "run_id IN ('r1'') OR (''1''=''1')") == []
    for bad in ("name = 'x' OR 1=1", "name = 'a'; DROP TABLE registered_models", "name = 'a' --"):
        with pytest.raises(InvalidParameterError):
            models(engine, bad)
    with Session(engine) as session:
        assert session.exec(select(func.count()).select_from(RegisteredModelRow)).one() == len(MODELS)


def test_random_valid_filters_always_execute(engine: Engine) -> None:
    """Any filter the parser accepts must run on the database without error."""
    rng = random.Random(7)
    nasty = ["", "'", "''", '"', "\\\\", "%", "_", "a\\%", "é", "x y", "`", "\\_", "%a%", "\u0000"]
    keys = ["name", "tag.k", "tags.`a b`", f"tag.`{PROMPT}`", "run_id", "source_path", "version_number"]
    ops = ["=", "!=", "LIKE", "ILIKE", "IN", "NOT IN", "<", ">="]
    executed = 0
    for _ in range(300):
        clauses = []
        for _ in range(rng.randint(1, 3)):
            text = rng.choice(nasty) + rng.choice(nasty)
            quoted = "'" + text.replace("'", "''") + "'"
            value = rng.choice([quoted, f"({quoted}, {quoted})", str(rng.randint(-3, 3))])
            clauses.append(f"{rng.choice(keys)} {rng.choice(ops)} {value}")
        try:
            versions(engine, " AND ".join(clauses))
            executed += 1
        except InvalidParameterError:
            pass
    assert executed > 20
