"""Tokens at rest, revocation, failed-attempt limits and look-alike user names (SQLite and PostgreSQL)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from registry_store.errors import AlreadyExistsError, InvalidParameterError, RateLimitedError, UnauthenticatedError
from registry_store.server_key import KEY_FILE, ServerKey
from registry_store.users import UserService
from tests.integration.helpers import DATABASES, Clock, Registry, build_registry, database_url


@pytest.fixture(params=DATABASES)
def reg(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Registry]:
    registry = build_registry(tmp_path, database_url(request, tmp_path))
    yield registry
    registry.services.close()


def users_at(reg: Registry, clock: Clock, tmp_path: Path) -> UserService:
    """A second service over the same database and key: another replica, with a clock the test sets."""
    return UserService(reg.services.db, clock=clock, key=ServerKey(tmp_path / "data" / KEY_FILE))


def test_tokens_are_stored_salted_and_keyed_never_as_their_sha256(reg: Registry) -> None:
    _user, first = reg.services.users.create_user(reg.admin, name="salted", roles=["viewer"])
    second = reg.services.users.add_token(reg.admin, name="salted")
    rows = reg.rows("SELECT id, token_hash, salt FROM tokens ORDER BY id")
    stored = {row[1] for row in rows}
    for token in (first, second):
        token_id, secret = token.split(".", 1)
        assert hashlib.sha256(token.encode()).hexdigest() not in stored
        assert hashlib.sha256(secret.encode()).hexdigest() not in stored
        assert any(str(row[0]) == token_id and len(row[2]) == 32 for row in rows)
    assert len({row[2] for row in rows if row[2]}) == sum(1 for row in rows if row[2])  # one salt per token
    assert reg.services.users.authenticate(first).name == "salted"
    with pytest.raises(UnauthenticatedError):
        reg.services.users.authenticate(first[:-1] + ("A" if first[-1] != "A" else "B"))
    other_id = rows[0][0]
    with pytest.raises(UnauthenticatedError):  # a valid secret under another row's id
        reg.services.users.authenticate(f"{other_id}.{first.split('.', 1)[1]}")


def test_a_legacy_sha256_token_keeps_working_and_is_rehashed_on_first_use(reg: Registry) -> None:
    _user, token = reg.services.users.create_user(reg.admin, name="legacy", roles=["viewer"])
    token_id = reg.services.users.identify(token)[1]
    old = "an-old-unsalted-token-from-before-0007"
    reg.execute("UPDATE tokens SET token_hash = :h, salt = NULL WHERE id = :i",
                h=hashlib.sha256(old.encode()).hexdigest(), i=token_id)
    assert reg.services.users.authenticate(old).name == "legacy"
    assert reg.scalar("SELECT salt FROM tokens WHERE id = :i", i=token_id) == ""
    legacy = hashlib.sha256(old.encode()).hexdigest()
    assert reg.scalar("SELECT token_hash FROM tokens WHERE id = :i", i=token_id) != legacy
    assert reg.services.users.authenticate(old).name == "legacy"


def test_a_deleted_token_is_refused_at_once_by_every_replica(reg: Registry, tmp_path: Path) -> None:
    _user, token = reg.services.users.create_user(reg.admin, name="revoked", roles=["viewer"])
    replica = users_at(reg, Clock(), tmp_path)
    assert replica.authenticate(token).name == reg.services.users.authenticate(token).name == "revoked"
    reg.execute("DELETE FROM tokens WHERE id = :i", i=replica.identify(token)[1])
    for users in (replica, reg.services.users):
        with pytest.raises(UnauthenticatedError):
            users.authenticate(token)


def test_failed_attempts_are_limited_per_address_across_replicas_until_the_window_ends(
    reg: Registry, tmp_path: Path
) -> None:
    clock = Clock(now=1_800_000_000_000)  # the start of a window
    _user, token = reg.services.users.create_user(reg.admin, name="limited", roles=["viewer"])
    a, b = users_at(reg, clock, tmp_path), users_at(reg, clock, tmp_path)
    limit = a.failures.limit
    for attempt in range(limit):
        with pytest.raises(UnauthenticatedError):
            (a if attempt % 2 else b).authenticate(f"guess-{attempt}", client="10.0.0.1")
    clock.now += 15_000
    for users, presented in ((a, "guess-x"), (b, token)):  # refused, even with the valid token
        with pytest.raises(RateLimitedError) as refused:
            users.authenticate(presented, client="10.0.0.1")
        assert refused.value.retry_after_s == 45 and refused.value.http_status == 429
    assert a.authenticate(token, client="10.0.0.2").name == "limited"  # other addresses are unaffected
    clock.now += 45_000  # the next window
    assert b.authenticate(token, client="10.0.0.1").name == "limited"
    with pytest.raises(UnauthenticatedError):
        a.authenticate("guess-y", client="10.0.0.3")
    assert reg.scalar("SELECT count(*) FROM auth_failures WHERE window_start < :w", w=clock.now) == 0


@pytest.mark.parametrize("name", ["Dana", "DANA", "ｄａｎａ", "dana ", "Ｄana"])
def test_look_alike_user_names_are_refused(reg: Registry, name: str) -> None:
    reg.services.users.create_user(reg.admin, name="dana", roles=["viewer"])
    with pytest.raises(AlreadyExistsError):
        reg.services.users.create_user(reg.admin, name=name, roles=["viewer"])


def test_of_concurrent_look_alike_creations_exactly_one_succeeds(reg: Registry) -> None:
    def create(name: str) -> bool:
        try:
            reg.services.users.create_user(reg.admin, name=name, roles=["viewer"])
        except AlreadyExistsError:
            return False
        return True

    with ThreadPoolExecutor(max_workers=6) as pool:
        created = list(pool.map(create, ["erin", "Erin", "ERIN", "ｅｒｉｎ", "erin ", "ErIn"]))
    assert created.count(True) == 1, created


@pytest.mark.parametrize("name", ["da\u200bna", "\u200ddana", "dana\ufeff", "da\u2060na", "da\u00adna"])
def test_user_names_with_invisible_characters_are_refused(reg: Registry, name: str) -> None:
    with pytest.raises(InvalidParameterError, match="invisible"):
        reg.services.users.create_user(reg.admin, name=name, roles=["viewer"])
    assert reg.scalar("SELECT count(*) FROM users WHERE name LIKE 'da%'") == 0
