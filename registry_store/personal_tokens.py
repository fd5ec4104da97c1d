"""Personal access tokens: a signed-in user names, creates (secret shown once), lists and revokes their own.

A personal token expires (default 90 days, at most a year); revoking keeps the row (listed as revoked,
refused by ``UserService.authenticate``) and ends the web sessions opened with it, in one transaction.
Tokens from before migration 0015 and those admins issue have no expiry and keep working.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import delete, update
from sqlmodel import Session, col, select

from registry_store.audit import Actor, append_event
from registry_store.db import Database
from registry_store.entities import PersonalToken
from registry_store.errors import InvalidParameterError, NotFoundError, UnauthenticatedError
from registry_store.tables import SessionRow, TokenRow, UserRow
from registry_store.token_hashes import TokenHasher

__all__ = [
    "DEFAULT_EXPIRY_DAYS", "LAST_USED_EVERY_MS", "MAX_EXPIRY_DAYS", "PersonalTokenService", "insert_token",
    "refusal_of",
]

DAY_MS = 24 * 3600 * 1000
DEFAULT_EXPIRY_DAYS = 90
MAX_EXPIRY_DAYS = 365
MAX_NAME_CHARS = 128
LAST_USED_EVERY_MS = 3600 * 1000
"""A token's ``last_used_at`` is written at most this often, so authenticating rarely writes."""


def insert_token(session: Session, hasher: TokenHasher, user_id: int, now: int, *, name: str | None = None,
                 expires_at: int | None = None) -> tuple[TokenRow, str]:
    """Insert a new ``<id>.<secret>`` token row (salted, keyed hash) and return it with the token."""
    salt, secret = hasher.new_secret()
    row = TokenRow(user_id=user_id, token_hash=hasher.digest(salt, secret), salt=salt, creation_timestamp=now,
                   name=name, expires_at=expires_at)
    session.add(row)
    session.flush()
    return row, f"{row.id}.{secret}"


def refusal_of(expires_at: int | None, revoked_at: int | None, now: int) -> str | None:
    """Why a token that matched must still be refused (revoked, expired), or None."""
    if revoked_at is not None:
        return "This token was revoked."
    if expires_at is not None and expires_at <= now:
        return "This token has expired; create a new one on the Tokens page (/ui/tokens) or with 'calabi tokens'."
    return None


def _token_name(name: object) -> str:
    if not isinstance(name, str) or not name.strip() or len(name.strip()) > MAX_NAME_CHARS:
        raise InvalidParameterError(f"A token needs a name of 1-{MAX_NAME_CHARS} characters.")
    if any(not c.isprintable() for c in name):
        raise InvalidParameterError("A token's name must be printable text.")
    return name.strip()


def _expiry_days(days: object) -> int:
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_EXPIRY_DAYS:
        raise InvalidParameterError(f"A token expires in 1 to {MAX_EXPIRY_DAYS} days (got {days!r}).")
    return days


def _view(row: TokenRow) -> PersonalToken:
    assert row.id is not None
    return PersonalToken(id=row.id, name=row.name or "(unnamed)", creation_timestamp=row.creation_timestamp,
                         expires_at=row.expires_at, revoked_at=row.revoked_at, last_used_at=row.last_used_at)


class PersonalTokenService:
    """The signed-in user's own tokens: list, create, revoke (any role; a token carries its user's roles)."""

    def __init__(self, db: Database, clock: Callable[[], int], hasher: TokenHasher) -> None:
        self._db = db
        self._clock = clock
        self._hasher = hasher

    def list_tokens(self, actor: Actor) -> list[PersonalToken]:
        """The actor's tokens, newest first (revoked and expired ones too)."""
        with self._db.read() as session:
            rows = session.exec(
                select(TokenRow).join(UserRow, col(UserRow.id) == col(TokenRow.user_id))
                .where(col(UserRow.name) == actor.name).order_by(col(TokenRow.id).desc())
            ).all()
        return [_view(row) for row in rows]

    def create_token(self, actor: Actor, *, name: object,
                     expires_in_days: object = DEFAULT_EXPIRY_DAYS) -> tuple[PersonalToken, str]:
        """Issue a token for the actor; the token is returned once."""
        token_name, days = _token_name(name), _expiry_days(expires_in_days)
        now = self._clock()
        with self._db.write() as session:
            user_id = self._user_id(session, actor)
            row, token = insert_token(session, self._hasher, user_id, now, name=token_name,
                                      expires_at=now + days * DAY_MS)
            append_event(session, actor=actor, action="create_token", timestamp=now, subject=f"user:{actor.name}",
                         after={"token_id": row.id, "name": token_name, "expires_at": row.expires_at})
            view = _view(row)
        return view, token

    def revoke_token(self, actor: Actor, token_id: int) -> PersonalToken:
        """Revoke one of the actor's tokens and end the web sessions opened with it (revoking twice is a no-op)."""
        now = self._clock()
        with self._db.write() as session:
            user_id = self._user_id(session, actor)
            row = session.exec(select(TokenRow).where(col(TokenRow.id) == token_id,
                                                      col(TokenRow.user_id) == user_id).with_for_update()).first()
            if row is None:
                raise NotFoundError(f"You have no token with id {token_id}.")
            if row.revoked_at is None:
                session.execute(update(TokenRow).where(col(TokenRow.id) == token_id).values(revoked_at=now))
                session.execute(delete(SessionRow).where(col(SessionRow.token_id) == token_id))
                append_event(session, actor=actor, action="revoke_token", timestamp=now,
                             subject=f"user:{actor.name}", after={"token_id": token_id, "name": row.name})
                session.refresh(row)
            view = _view(row)
        return view

    @staticmethod
    def _user_id(session: Session, actor: Actor) -> int:
        user_id = session.exec(select(col(UserRow.id)).where(col(UserRow.name) == actor.name)).first()
        if user_id is None:
            raise UnauthenticatedError(f"User '{actor.name}' no longer exists.")
        return user_id
