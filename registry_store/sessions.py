"""Web-page sessions, stored in the database so that every API replica shares them.

Signing in (with a bearer token, or through OpenID Connect) creates a session: a random 32-byte id
goes to the browser (cookie) and only its SHA-256 hash is stored, with its user, the token it was
opened with (none after OpenID Connect), a CSRF token and an expiry (never after the token's).
Every request resolves the id to an ``Actor`` with the user's *current* roles and groups; deleting the token
or the user ends its sessions (foreign key, ``ON DELETE CASCADE``), and so does revoking the token.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import delete
from sqlmodel import Session, col, select

from registry_store.audit import Actor
from registry_store.db import Database
from registry_store.errors import UnauthenticatedError
from registry_store.group_membership import groups_column, parse_groups
from registry_store.personal_tokens import refusal_of
from registry_store.tables import SessionRow, TokenRow, UserRow
from registry_store.users import expand_roles

__all__ = ["SESSION_TTL_MS", "WebSession", "WebSessionStore"]

SESSION_TTL_MS = 12 * 3600 * 1000
_ID_BYTES = 32
_MAX_ID_CHARS = 128


def _hash(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


@dataclass(frozen=True)
class WebSession:
    """A resolved session: who is signed in, the CSRF token of its forms, and until when."""

    actor: Actor
    csrf_token: str
    expires_at: int


class WebSessionStore:
    """Creates, resolves and ends web sessions."""

    def __init__(self, db: Database, *, clock: Callable[[], int], ttl_ms: int = SESSION_TTL_MS) -> None:
        self._db = db
        self._clock = clock
        self._ttl_ms = ttl_ms

    @property
    def ttl_seconds(self) -> int:
        """How long a session lasts, for the cookie's Max-Age."""
        return self._ttl_ms // 1000

    def create(self, actor: Actor, token_id: int) -> tuple[str, WebSession]:
        """Open a session for ``actor``, who has just authenticated with token ``token_id``; returns the raw id once.

        The session ends when the token expires, if that comes first."""
        now = self._clock()
        with self._db.write() as session:
            token = session.get(TokenRow, token_id)
            if token is None or refusal_of(token.expires_at, token.revoked_at, now) is not None:
                raise UnauthenticatedError("Invalid or revoked token.")
            expires_at = min(now + self._ttl_ms, token.expires_at or now + self._ttl_ms)
            return self._insert(session, actor, token.user_id, token_id, now, expires_at)

    def create_for_user(self, actor: Actor, user_id: int) -> tuple[str, WebSession]:
        """Open a session for ``actor`` (user ``user_id``), who has just signed in through OpenID Connect."""
        now = self._clock()
        with self._db.write() as session:
            return self._insert(session, actor, user_id, None, now, now + self._ttl_ms)

    def _insert(self, session: Session, actor: Actor, user_id: int, token_id: int | None, now: int,
                expires_at: int) -> tuple[str, WebSession]:
        session_id = secrets.token_urlsafe(_ID_BYTES)
        csrf_token = secrets.token_urlsafe(_ID_BYTES)
        session.execute(delete(SessionRow).where(col(SessionRow.expires_at) <= now))
        session.add(SessionRow(
            id_hash=_hash(session_id), token_id=token_id, user_id=user_id, user_name=actor.name,
            csrf_token=csrf_token, creation_timestamp=now, expires_at=expires_at,
        ))
        return session_id, WebSession(actor=actor, csrf_token=csrf_token, expires_at=expires_at)

    def resolve(self, session_id: str | None, *, request_id: str = "") -> WebSession | None:
        """The live session with this id, with the user's current roles; None when unknown or expired."""
        if not session_id or len(session_id) > _MAX_ID_CHARS:
            return None
        with self._db.read() as session:
            found = session.exec(
                select(SessionRow, UserRow, groups_column(col(UserRow.id)))
                .join(UserRow, col(UserRow.id) == col(SessionRow.user_id))
                .where(col(SessionRow.id_hash) == _hash(session_id), col(SessionRow.expires_at) > self._clock())
            ).first()
        if found is None:
            return None
        row, user, groups = found
        actor = Actor(name=user.name, roles=expand_roles(user.roles.split(",")), groups=parse_groups(groups),
                      request_id=request_id)
        return WebSession(actor=actor, csrf_token=row.csrf_token, expires_at=row.expires_at)

    def end(self, session_id: str | None) -> None:
        """Sign out: forget the session (unknown ids are ignored)."""
        if not session_id or len(session_id) > _MAX_ID_CHARS:
            return
        with self._db.write() as session:
            session.execute(delete(SessionRow).where(col(SessionRow.id_hash) == _hash(session_id)))
