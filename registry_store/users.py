"""Users, roles and bearer tokens (stored only as SHA-256 hashes)."""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable, Iterable

from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from registry_store.audit import Actor, append_event
from registry_store.db import Database
from registry_store.entities import User
from registry_store.errors import (
    AlreadyExistsError,
    InvalidParameterError,
    NotFoundError,
    PermissionDeniedError,
    UnauthenticatedError,
)
from registry_store.tables import TokenRow, UserRow

__all__ = ["ROLES", "SYSTEM_ACTOR", "UserService", "expand_roles", "require_role"]

ROLES = ("viewer", "engineer", "approver", "admin")
_IMPLIED = {
    "viewer": {"viewer"},
    "engineer": {"viewer", "engineer"},
    "approver": {"viewer", "approver"},
    "admin": set(ROLES),
}
TOKEN_CACHE_SECONDS = 5.0
TOKEN_CACHE_SIZE = 10_000
SYSTEM_ACTOR = Actor(name="system", roles=frozenset(ROLES))


def require_role(actor: Actor, role: str, action: str) -> None:
    """Raise ``PermissionDeniedError`` unless ``actor`` holds ``role`` (directly or implied)."""
    if role not in actor.roles:
        raise PermissionDeniedError(
            f"User '{actor.name}' may not {action}: the '{role}' role is required "
            f"(has: {', '.join(sorted(actor.roles)) or 'none'}). Ask an admin to grant it."
        )


def expand_roles(roles: Iterable[str]) -> frozenset[str]:
    """The granted roles with the roles they imply (admin implies every role)."""
    return frozenset(r for role in roles for r in _IMPLIED[role])


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _parse_roles(roles: Iterable[object]) -> list[str]:
    parsed = sorted({str(r).strip().lower() for r in roles})
    unknown = [r for r in parsed if r not in ROLES]
    if unknown or not parsed:
        raise InvalidParameterError(
            f"Invalid roles {unknown or '[]'}: choose one or more of {', '.join(ROLES)}."
        )
    return parsed


class UserService:
    """Creates users and tokens and turns a presented token into an ``Actor``."""

    def __init__(self, db: Database, clock: Callable[[], int]) -> None:
        self._db = db
        self._clock = clock
        # token hash -> (valid until, user, roles): saves a query per request; a few seconds of staleness
        self._recent: dict[str, tuple[float, str, frozenset[str]]] = {}

    def authenticate(self, token: str | None, *, request_id: str = "") -> Actor:
        """The actor owning ``token``; ``UnauthenticatedError`` if it is missing or unknown."""
        if not token:
            raise UnauthenticatedError(
                "Authentication required: send 'Authorization: Bearer <token>' "
                "(MLFLOW_TRACKING_TOKEN for the mlflow client)."
            )
        digest = _hash(token)
        now = time.monotonic()
        cached = self._recent.get(digest)
        if cached is None or cached[0] < now:
            with self._db.read() as session:
                found = session.exec(
                    select(UserRow).join(TokenRow, col(TokenRow.user_id) == col(UserRow.id))
                    .where(col(TokenRow.token_hash) == digest)
                ).first()
            if found is None:
                raise UnauthenticatedError("Invalid or revoked token.")
            cached = (now + TOKEN_CACHE_SECONDS, found.name, expand_roles(found.roles.split(",")))
            if len(self._recent) >= TOKEN_CACHE_SIZE:
                self._recent.clear()
            self._recent[digest] = cached
        return Actor(name=cached[1], roles=cached[2], request_id=request_id)

    def create_user(self, actor: Actor, *, name: str, roles: Iterable[object]) -> tuple[User, str]:
        """Create a user with a fresh token (admin only); the token is returned once."""
        require_role(actor, "admin", "create users")
        return self._insert_user(actor, name=name, roles=_parse_roles(roles), token=None)

    def ensure_admin(self, token: str, *, name: str = "admin") -> bool:
        """Make sure an admin user owns ``token`` (seeding the first admin); True if created."""
        with self._db.read() as session:
            if session.exec(select(TokenRow).where(col(TokenRow.token_hash) == _hash(token))).first():
                return False
        try:
            self._insert_user(SYSTEM_ACTOR, name=name, roles=["admin"], token=token)
        except AlreadyExistsError:
            self.add_token(SYSTEM_ACTOR, name=name, token=token)
        return True

    def add_token(self, actor: Actor, *, name: str, token: str | None = None) -> str:
        """Issue another token for an existing user (admin only)."""
        require_role(actor, "admin", "issue tokens")
        token = token or secrets.token_urlsafe(32)
        now = self._clock()
        with self._db.write() as session:
            user = session.exec(select(UserRow).where(col(UserRow.name) == name)).first()
            if user is None or user.id is None:
                raise NotFoundError(f"User '{name}' does not exist.")
            session.add(TokenRow(user_id=user.id, token_hash=_hash(token), creation_timestamp=now))
            append_event(session, actor=actor, action="issue_token", timestamp=now, subject=f"user:{name}")
        return token

    def list_users(self, actor: Actor) -> list[User]:
        """All users (admin only)."""
        require_role(actor, "admin", "list users")
        with self._db.read() as session:
            rows = session.exec(select(UserRow).order_by(col(UserRow.name))).all()
        return [_view(row) for row in rows]

    def _insert_user(
        self, actor: Actor, *, name: str, roles: list[str], token: str | None
    ) -> tuple[User, str]:
        if not isinstance(name, str) or not name.strip() or len(name) > 256:
            raise InvalidParameterError("User name must be 1-256 characters.")
        token = token or secrets.token_urlsafe(32)
        now = self._clock()
        row = UserRow(name=name, roles=",".join(roles), creation_timestamp=now)
        try:
            with self._db.write() as session:
                session.add(row)
                session.flush()
                assert row.id is not None
                session.add(TokenRow(user_id=row.id, token_hash=_hash(token), creation_timestamp=now))
                append_event(
                    session, actor=actor, action="create_user", timestamp=now,
                    subject=f"user:{name}", after={"roles": roles},
                )
        except IntegrityError as exc:
            raise AlreadyExistsError(f"User '{name}' already exists.") from exc
        return _view(row), token


def _view(row: UserRow) -> User:
    return User(name=row.name, roles=row.roles.split(","), creation_timestamp=row.creation_timestamp)
