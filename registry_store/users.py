"""Users, roles and bearer tokens (stored salted and keyed: ``token_hashes.py``)."""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Iterable

from sqlalchemy import bindparam, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col
from sqlmodel import select as orm_select

from policies.decisions import person_key
from policies.role_map import ROLES, expand_roles
from registry_store.audit import Actor, append_event
from registry_store.auth_failures import FAILURES, FailureLimit
from registry_store.db import Database
from registry_store.entities import User
from registry_store.errors import (
    AlreadyExistsError,
    InvalidParameterError,
    NotFoundError,
    PermissionDeniedError,
    UnauthenticatedError,
)
from registry_store.group_membership import groups_column, parse_groups
from registry_store.personal_tokens import LAST_USED_EVERY_MS, PersonalTokenService, insert_token, refusal_of
from registry_store.server_key import ServerKey
from registry_store.tables import GroupRow, TokenRow, UserRow
from registry_store.token_hashes import TokenHasher, legacy_hash, split_token

__all__ = ["ROLES", "SYSTEM_ACTOR", "UserService", "expand_roles", "require_role"]

_Found = tuple[int, str | None, str, str, str | None, int | None, int | None, int | None, int | None]
SYSTEM_ACTOR = Actor(name="system", roles=frozenset(ROLES))
USER_NAMES_LOCK = 0x5553_4552  # PostgreSQL advisory lock serialising user creation ("USER")
_FIND_TOKEN = (
    select(col(TokenRow.id), col(TokenRow.salt), col(TokenRow.token_hash), col(UserRow.name), col(UserRow.roles),
           groups_column(col(UserRow.id)), col(TokenRow.expires_at), col(TokenRow.revoked_at),
           col(TokenRow.last_used_at), FAILURES)
    .join(UserRow, col(UserRow.id) == col(TokenRow.user_id))
    .where(or_(col(TokenRow.id) == bindparam("token_id"), col(TokenRow.token_hash) == bindparam("keyed"),
               col(TokenRow.token_hash) == bindparam("legacy")))
)
"""Rows that may own a token: by the id of ``<id>.<secret>``, or by a bare token's keyed or legacy hash;
with the user's groups, the token's expiry, revocation and last use, and the client's failures. Built once: per
request only its parameters change."""


def require_role(actor: Actor, role: str, action: str) -> None:
    """Raise ``PermissionDeniedError`` unless ``actor`` holds ``role`` (directly or implied)."""
    if role not in actor.roles:
        raise PermissionDeniedError(
            f"User '{actor.name}' may not {action}: the '{role}' role is required "
            f"(has: {', '.join(sorted(actor.roles)) or 'none'}). Ask an admin to grant it."
        )


def _parse_roles(roles: Iterable[object]) -> list[str]:
    parsed = sorted({str(r).strip().lower() for r in roles})
    unknown = [r for r in parsed if r not in ROLES]
    if unknown or not parsed:
        raise InvalidParameterError(
            f"Invalid roles {unknown or '[]'}: choose one or more of {', '.join(ROLES)}."
        )
    return parsed


def _user_name(name: object) -> str:
    """The NFKC form of a new user's name; invisible (format) characters are refused."""
    if not isinstance(name, str) or not name.strip() or len(name) > 256:
        raise InvalidParameterError("User name must be 1-256 characters.")
    if any(unicodedata.category(c) == "Cf" for c in name):
        raise InvalidParameterError("User name must not contain invisible (zero-width or format) characters.")
    return unicodedata.normalize("NFKC", name).strip()


class UserService:
    """Creates users and tokens and turns a presented token into an ``Actor``.

    Every request reads its token from the database (no cache), so deleting a token or changing
    a user's roles takes effect at once on every replica.
    """

    def __init__(self, db: Database, clock: Callable[[], int], key: ServerKey) -> None:
        self._db = db
        self._clock = clock
        self._hasher = TokenHasher(key)
        self.failures = FailureLimit(db)
        self.tokens = PersonalTokenService(db, clock, self._hasher)

    def authenticate(self, token: str | None, *, request_id: str = "", client: str = "") -> Actor:
        """The actor owning ``token``; ``UnauthenticatedError`` if it is missing or unknown,
        ``RateLimitedError`` while ``client`` has too many recent failures."""
        return self.identify(token, request_id=request_id, client=client)[0]

    def identify(self, token: str | None, *, request_id: str = "", client: str = "") -> tuple[Actor, int]:
        """``authenticate``, also answering the token's id (web sessions are bound to it)."""
        if not token:
            raise UnauthenticatedError(
                "Authentication required: send 'Authorization: Bearer <token>' "
                "(MLFLOW_TRACKING_TOKEN for the mlflow client)."
            )
        now = self._clock()
        found = self._find(token, client, now)
        if found is None:
            self.failures.check(self.failures.current(client, now), now)
            self.failures.record(client, now)
            raise UnauthenticatedError("Invalid or revoked token.")
        token_id, salt, name, roles, groups, expires_at, revoked_at, last_used_at, failures = found
        self.failures.check(failures, now)
        refusal = refusal_of(expires_at, revoked_at, now)
        if refusal is not None:
            raise UnauthenticatedError(refusal)
        if salt is None:
            self._rehash(token_id, token)
        if last_used_at is None or now - last_used_at >= LAST_USED_EVERY_MS:
            self._mark_used(token_id, now)
        actor = Actor(name=name, roles=expand_roles(roles.split(",")), groups=parse_groups(groups),
                      request_id=request_id)
        return actor, token_id

    def _find(self, token: str, client: str, now: int) -> _Found | None:
        """The matching token row (id, salt, user, roles, groups, expiry, revocation, last use) and the client's
        failures, in one query."""
        split = split_token(token)
        params = {"token_id": split[0] if split else -1, "keyed": self._hasher.digest("", token),
                  "legacy": legacy_hash(token), **self.failures.params(client, now)}
        with self._db.read_connection() as connection:
            rows = connection.execute(_FIND_TOKEN, params).all()
        for token_id, salt, stored, name, roles, groups, expires_at, revoked_at, last_used_at, failures in rows:
            if token_id is not None and self._matches(token_id, salt, stored, token, split):
                return token_id, salt, name, roles, groups, expires_at, revoked_at, last_used_at, failures
        return None

    def _matches(self, token_id: int, salt: str | None, stored: str, token: str,
                 split: tuple[int, str] | None) -> bool:
        if salt:  # issued as <id>.<secret>
            return split is not None and split[0] == token_id and self._hasher.matches(stored, salt, split[1])
        return self._hasher.matches(stored, salt, token)

    def _rehash(self, token_id: int, token: str) -> None:
        """Replace a legacy unsalted SHA-256 by the keyed hash (the token itself is unchanged)."""
        with self._db.write_connection() as connection:
            connection.execute(
                update(TokenRow).where(col(TokenRow.id) == token_id, col(TokenRow.salt).is_(None))
                .values(token_hash=self._hasher.digest("", token), salt="")
            )

    def _mark_used(self, token_id: int, now: int) -> None:
        """Record the token's use (at most hourly: the condition makes racing replicas write once)."""
        with self._db.write_connection() as connection:
            connection.execute(
                update(TokenRow).where(col(TokenRow.id) == token_id,
                                       or_(col(TokenRow.last_used_at).is_(None),
                                           col(TokenRow.last_used_at) <= now - LAST_USED_EVERY_MS))
                .values(last_used_at=now)
            )

    def create_user(self, actor: Actor, *, name: str, roles: Iterable[object]) -> tuple[User, str]:
        """Create a user with a fresh token (admin only); the token is returned once."""
        require_role(actor, "admin", "create users")
        return self._insert_user(actor, name=name, roles=_parse_roles(roles), token=None)

    def ensure_admin(self, token: str, *, name: str = "admin", first_only: bool = False) -> bool:
        """Make sure an admin user owns ``token`` (seeding the first admin); False if it does not.

        ``first_only`` (a token the server generated itself, not one an operator configured): store it only when
        it creates the first admin, never as one more token of an existing admin. So each replica started
        without ``CALABI_ADMIN_TOKEN`` does not mint an admin credential of its own.
        """
        with self._db.read() as session:
            hashes = [self._hasher.digest("", token), legacy_hash(token)]
            if session.exec(orm_select(TokenRow).where(col(TokenRow.token_hash).in_(hashes))).first():
                return True
        try:
            self._insert_user(SYSTEM_ACTOR, name=name, roles=["admin"], token=token)
        except AlreadyExistsError:
            if first_only:
                return False
            self.add_token(SYSTEM_ACTOR, name=name, token=token)
        return True

    def add_token(self, actor: Actor, *, name: str, token: str | None = None) -> str:
        """Issue another token for an existing user (admin only); ``token``: a bare token to store."""
        require_role(actor, "admin", "issue tokens")
        now = self._clock()
        with self._db.write() as session:
            user = session.exec(orm_select(UserRow).where(col(UserRow.name) == name)).first()
            if user is None or user.id is None:
                raise NotFoundError(f"User '{name}' does not exist.")
            issued = self._store_token(session, user.id, token, now)
            append_event(session, actor=actor, action="issue_token", timestamp=now, subject=f"user:{name}")
        return issued

    def list_users(self, actor: Actor) -> list[User]:
        """All users (admin only)."""
        require_role(actor, "admin", "list users")
        with self._db.read() as session:
            rows = session.exec(
                orm_select(UserRow, col(GroupRow.name))
                .outerjoin(GroupRow, col(GroupRow.id) == col(UserRow.primary_group_id))
                .order_by(col(UserRow.name))
            ).all()
        return [_view(row, group) for row, group in rows]

    def _store_token(self, session: Session, user_id: int, token: str | None, now: int) -> str:
        """Insert a token row: ``token`` stored by its keyed hash, else a new ``<id>.<secret>`` token."""
        if token is not None:
            session.add(TokenRow(user_id=user_id, token_hash=self._hasher.digest("", token), salt="",
                                 creation_timestamp=now))
            return token
        return insert_token(session, self._hasher, user_id, now)[1]

    def _insert_user(
        self, actor: Actor, *, name: str, roles: list[str], token: str | None
    ) -> tuple[User, str]:
        name = _user_name(name)
        now = self._clock()
        row = UserRow(name=name, roles=",".join(roles), creation_timestamp=now)
        try:
            with self._db.write() as session:
                if self._db.is_postgres:  # one user creation at a time, so two look-alikes cannot both pass
                    session.execute(select(func.pg_advisory_xact_lock(USER_NAMES_LOCK)))
                key = person_key(name)
                taken = next((n for n in session.exec(orm_select(col(UserRow.name))) if person_key(n) == key), None)
                if taken is not None:
                    raise AlreadyExistsError(f"User '{name}' already exists (as '{taken}').")
                session.add(row)
                session.flush()
                assert row.id is not None
                issued = self._store_token(session, row.id, token, now)
                append_event(
                    session, actor=actor, action="create_user", timestamp=now,
                    subject=f"user:{name}", after={"roles": roles},
                )
        except IntegrityError as exc:
            raise AlreadyExistsError(f"User '{name}' already exists.") from exc
        return _view(row), issued


def _view(row: UserRow, primary_group: str | None = None) -> User:
    return User(name=row.name, roles=row.roles.split(","), creation_timestamp=row.creation_timestamp,
                primary_group=primary_group)
