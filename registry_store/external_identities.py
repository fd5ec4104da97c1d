"""People who sign in through OpenID Connect: a user keyed by the provider's (issuer, subject), never by a name.

A provider user whose preferred name is "admin" becomes a new user (named "admin-2" if "admin" is taken), never
the local admin. The name is chosen at the first sign-in and kept: audit events, sign-offs and grants name it.

At every sign-in, in one transaction: the roles become the role map's answer (``policies/role_map.py``), and the
provider is the source of truth for the person's memberships of the Calabi groups it knows about: the groups the
role map names (created when missing) and the groups that exist in Calabi. The person's memberships become exactly
the claimed groups among those (a group they left at the provider is left here too, so a sign-off quorum never
counts someone the provider no longer lists); claimed groups Calabi does not know are ignored. A primary group
(the owner of models they create) is set to their first claimed group when they have none. Changes are audited.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Iterable

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col
from sqlmodel import select as orm_select

from policies.decisions import person_key
from policies.role_map import expand_roles
from registry_store.audit import Actor, append_event
from registry_store.db import Database
from registry_store.errors import InvalidParameterError, PermissionDeniedError
from registry_store.groups import GROUP_NAMES_LOCK, group_name
from registry_store.tables import GroupMemberRow, GroupRow, UserRow
from registry_store.users import USER_NAMES_LOCK

__all__ = ["ExternalIdentityService", "display_name"]

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


def _group_names(names: Iterable[str]) -> list[str]:
    """The valid names among ``names``, normalised as Calabi stores them, in order, once each."""
    valid: dict[str, None] = {}
    for name in names:
        try:
            valid[group_name(name)] = None
        except InvalidParameterError:
            continue
    return list(valid)


class ExternalIdentityService:
    """Finds or creates the user of an (issuer, subject), sets their roles and group memberships, in one
    transaction."""

    def __init__(self, db: Database, clock: Callable[[], int]) -> None:
        self._db = db
        self._clock = clock

    def sign_in(self, *, issuer: str, subject: str, name: str, roles: tuple[str, ...], groups: tuple[str, ...] = (),
                mapped_groups: tuple[str, ...] = (), request_id: str = "") -> tuple[Actor, int]:
        """The actor and user id of the person (issuer, subject), created on first sign-in with ``name``.

        ``roles``: what the role map grants now; none refuses the sign-in (``PermissionDeniedError``) and changes
        nothing. ``groups``: the groups claim; ``mapped_groups``: the groups the role map names."""
        if not issuer or not subject or len(issuer) > 512 or len(subject) > 255:
            raise InvalidParameterError("The ID token's issuer or subject is missing or too long.")
        if not roles:
            raise PermissionDeniedError(
                "Your account is in none of the groups that Calabi maps to a role (CALABI_OIDC_ROLE_MAP). "
                "Ask an admin to map one of your groups."
            )
        claimed, known = _group_names(groups), _group_names(mapped_groups)
        try:
            return self._sign_in(issuer, subject, name, roles, claimed, known, request_id)
        except IntegrityError:  # a concurrent first sign-in created the user or a group: this time it finds them
            return self._sign_in(issuer, subject, name, roles, claimed, known, request_id)

    def _sign_in(self, issuer: str, subject: str, name: str, roles: tuple[str, ...], claimed: list[str],
                 mapped: list[str], request_id: str) -> tuple[Actor, int]:
        now = self._clock()
        joined = ",".join(roles)
        with self._db.write() as session:
            row = session.exec(orm_select(UserRow).where(col(UserRow.oidc_issuer) == issuer,
                                                         col(UserRow.oidc_subject) == subject)
                               .with_for_update()).first()
            if row is None:
                row = self._create(session, issuer, subject, name, joined, now, request_id)
            actor = Actor(name=row.name, roles=expand_roles(roles), request_id=request_id)
            if row.roles != joined:
                session.execute(update(UserRow).where(col(UserRow.id) == row.id).values(roles=joined))
                append_event(session, actor=actor, action="set_roles", timestamp=now, subject=f"user:{row.name}",
                             before={"roles": row.roles.split(",")}, after={"roles": list(roles), "source": "oidc"})
            member_of = self._sync_groups(session, actor, row, claimed, mapped, now)
            assert row.id is not None
            user_id = row.id
        return Actor(name=actor.name, roles=actor.roles, groups=frozenset(member_of), request_id=request_id), user_id

    def _create(self, session: Session, issuer: str, subject: str, name: str, roles: str, now: int,
                request_id: str) -> UserRow:
        if self._db.is_postgres:  # one user creation at a time, so two look-alike names cannot both pass
            session.execute(select(func.pg_advisory_xact_lock(USER_NAMES_LOCK)))
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

    def _sync_groups(self, session: Session, actor: Actor, user: UserRow, claimed: list[str], mapped: list[str],
                     now: int) -> list[str]:
        """Make the user's memberships the claimed groups Calabi knows; the names they are now a member of."""
        existing = {g.name: g for g in session.exec(orm_select(GroupRow).where(col(GroupRow.name).in_(claimed)))}
        for missing in [g for g in claimed if g in mapped and g not in existing]:
            existing[missing] = self._create_group(session, actor, missing, now)
        wanted = [existing[g] for g in claimed if g in existing]
        current = session.exec(
            orm_select(GroupRow).join(GroupMemberRow, col(GroupMemberRow.group_id) == col(GroupRow.id))
            .where(col(GroupMemberRow.user_id) == user.id)
        ).all()
        wanted_ids, current_ids = {g.id for g in wanted}, {g.id for g in current}
        assert user.id is not None
        for group in wanted:
            if group.id not in current_ids:
                assert group.id is not None
                session.add(GroupMemberRow(group_id=group.id, user_id=user.id))
        left = [g.id for g in current if g.id not in wanted_ids]
        if left:
            session.execute(delete(GroupMemberRow).where(col(GroupMemberRow.user_id) == user.id,
                                                         col(GroupMemberRow.group_id).in_(left)))
        names = [g.name for g in wanted]
        if wanted_ids != current_ids:
            append_event(session, actor=actor, action="sync_groups", timestamp=now, subject=f"user:{user.name}",
                         before={"groups": sorted(g.name for g in current)},
                         after={"groups": sorted(names), "source": "oidc"})
        if user.primary_group_id is None or user.primary_group_id not in wanted_ids:
            primary = wanted[0] if wanted else None
            if user.primary_group_id is not None or primary is not None:
                session.execute(update(UserRow).where(col(UserRow.id) == user.id)
                                .values(primary_group_id=primary.id if primary else None))
                append_event(session, actor=actor, action="set_primary_group", timestamp=now,
                             subject=f"user:{user.name}", after={"primary_group": primary.name if primary else None,
                                                                 "source": "oidc"})
        return names

    def _create_group(self, session: Session, actor: Actor, name: str, now: int) -> GroupRow:
        """A group the role map names but nobody created yet (its name may not look like another's)."""
        if self._db.is_postgres:
            session.execute(select(func.pg_advisory_xact_lock(GROUP_NAMES_LOCK)))
        key = person_key(name)
        taken = next((g for g in session.exec(orm_select(GroupRow)) if person_key(g.name) == key), None)
        if taken is not None:
            return taken
        row = GroupRow(name=name, description="Created at a single sign-on: named in CALABI_OIDC_ROLE_MAP.",
                       created_at=now)
        session.add(row)
        session.flush()
        append_event(session, actor=actor, action="create_group", timestamp=now, subject=f"group:{name}",
                     after={"description": row.description, "source": "oidc"})
        return row
