"""People who sign in through OpenID Connect: a user keyed by the provider's (issuer, subject), never by a name.

A provider user whose preferred name is "admin" becomes a new user (named "admin-2" if "admin" is taken), never
the local admin. The name is chosen at the first sign-in and kept: audit events, sign-offs and grants name it.
The roles are the role map's answer at every sign-in (``policies/role_map.py``); a change is audited.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col
from sqlmodel import select as orm_select

from policies.decisions import person_key
from policies.role_map import expand_roles
from registry_store.audit import Actor, append_event
from registry_store.db import Database
from registry_store.errors import InvalidParameterError, PermissionDeniedError
from registry_store.tables import UserRow

__all__ = ["ExternalIdentityService", "display_name"]

_USER_NAMES_LOCK = 0x5553_4552  # the advisory lock users.py takes to create users one at a time
MAX_NAME_CHARS = 200
MAX_SUFFIX = 1000


def display_name(claims: dict[str, object]) -> str:
    """The name a new user gets: ``preferred_username``, else ``email``, else ``sub``, as visible NFKC text."""
    for claim in ("preferred_username", "email", "sub"):
        value = claims.get(claim)
        if isinstance(value, str):
            text = "".join(c for c in unicodedata.normalize("NFKC", value)
                           if unicodedata.category(c)[0] != "C").strip()[:MAX_NAME_CHARS]
            if text:
                return text
    raise InvalidParameterError("The ID token names no subject.")


class ExternalIdentityService:
    """Finds or creates the user of an (issuer, subject) and sets their roles, in one transaction."""

    def __init__(self, db: Database, clock: Callable[[], int]) -> None:
        self._db = db
        self._clock = clock

    def sign_in(self, *, issuer: str, subject: str, name: str, roles: tuple[str, ...],
                request_id: str = "") -> tuple[Actor, int]:
        """The actor and user id of the person (issuer, subject), created on first sign-in with ``name``.

        ``roles``: what the role map grants now; none refuses the sign-in (``PermissionDeniedError``) and
        leaves the user as it was."""
        if not issuer or not subject or len(issuer) > 512 or len(subject) > 255:
            raise InvalidParameterError("The ID token's issuer or subject is missing or too long.")
        if not roles:
            raise PermissionDeniedError(
                "Your account is in none of the groups that Calabi maps to a role (CALABI_OIDC_ROLE_MAP). "
                "Ask an admin to map one of your groups."
            )
        try:
            return self._sign_in(issuer, subject, name, roles, request_id)
        except IntegrityError:  # a concurrent first sign-in of the same person created the user: update it
            return self._sign_in(issuer, subject, name, roles, request_id)

    def _sign_in(self, issuer: str, subject: str, name: str, roles: tuple[str, ...],
                 request_id: str) -> tuple[Actor, int]:
        now = self._clock()
        joined = ",".join(roles)
        with self._db.write() as session:
            row = session.exec(orm_select(UserRow).where(col(UserRow.oidc_issuer) == issuer,
                                                         col(UserRow.oidc_subject) == subject)
                               .with_for_update()).first()
            actor = Actor(name=row.name if row else "", roles=frozenset(roles), request_id=request_id)
            if row is None:
                row = self._create(session, issuer, subject, name, joined, now, request_id)
                actor = Actor(name=row.name, roles=actor.roles, request_id=request_id)
            elif row.roles != joined:
                session.execute(update(UserRow).where(col(UserRow.id) == row.id).values(roles=joined))
                append_event(session, actor=actor, action="set_roles", timestamp=now, subject=f"user:{row.name}",
                             before={"roles": row.roles.split(",")}, after={"roles": list(roles),
                                                                             "source": "oidc"})
            assert row.id is not None
            user_id = row.id
        return Actor(name=actor.name, roles=expand_roles(roles), request_id=request_id), user_id

    def _create(self, session: Session, issuer: str, subject: str, name: str, roles: str, now: int,
                request_id: str) -> UserRow:
        if self._db.is_postgres:  # one user creation at a time, so two look-alike names cannot both pass
            session.execute(select(func.pg_advisory_xact_lock(_USER_NAMES_LOCK)))
        taken = {person_key(n) for n in session.exec(orm_select(col(UserRow.name)))}
        chosen = next((c for c in (name, *(f"{name}-{i}" for i in range(2, MAX_SUFFIX))) if person_key(c) not in taken),
                      f"{name}-{subject[:32]}")
        row = UserRow(name=chosen, roles=roles, creation_timestamp=now, oidc_issuer=issuer, oidc_subject=subject)
        session.add(row)
        session.flush()
        creator = Actor(name=chosen, roles=frozenset(), request_id=request_id)
        append_event(session, actor=creator, action="create_user", timestamp=now, subject=f"user:{chosen}",
                     after={"roles": roles.split(","), "oidc_issuer": issuer, "oidc_subject": subject})
        return row
