"""Groups of users (teams): create, list, delete, members and a user's primary group. Admin only, audited."""

from __future__ import annotations

import unicodedata
from collections.abc import Callable

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col
from sqlmodel import select as orm_select

from policies.decisions import person_key
from registry_store.audit import Actor, append_event
from registry_store.db import Database
from registry_store.entities import Group
from registry_store.errors import AlreadyExistsError, InvalidParameterError, NotFoundError
from registry_store.tables import GroupMemberRow, GroupRow, ModelGrantRow, UserRow
from registry_store.users import require_role

__all__ = ["GroupService", "group_name"]

GROUP_NAMES_LOCK = 0x4752_4F55  # PostgreSQL advisory lock serialising group creation ("GROU")
_MAX_NAME = 256
_MAX_DESCRIPTION = 5000


def group_name(name: object) -> str:
    """The NFKC form of a group's name; control and invisible (format) characters are refused."""
    if not isinstance(name, str) or not name.strip() or len(name) > _MAX_NAME:
        raise InvalidParameterError(f"Group name must be 1-{_MAX_NAME} characters.")
    if any(unicodedata.category(c) in {"Cc", "Cf"} for c in name):
        raise InvalidParameterError("Group name must not contain control or invisible (format) characters.")
    return unicodedata.normalize("NFKC", name).strip()


def _user_key(name: object) -> str:
    if not isinstance(name, str) or not name.strip():
        raise InvalidParameterError("User name must be a non-empty string.")
    return unicodedata.normalize("NFKC", name).strip()


class GroupService:
    """Groups, their members and users' primary groups; every method needs admin, every change is audited."""

    def __init__(self, db: Database, clock: Callable[[], int]) -> None:
        self._db = db
        self._clock = clock

    def create_group(self, actor: Actor, *, name: object, description: object = "") -> Group:
        """Create an empty group; a name equal to another's after NFKC and case folding is taken."""
        require_role(actor, "admin", "create groups")
        normalised = group_name(name)
        if not isinstance(description, str) or len(description) > _MAX_DESCRIPTION:
            raise InvalidParameterError(f"Group description must be a string of at most {_MAX_DESCRIPTION} characters.")
        now = self._clock()
        row = GroupRow(name=normalised, description=description, created_at=now)
        try:
            with self._db.write() as session:
                if self._db.is_postgres:  # one group creation at a time, so two look-alikes cannot both pass
                    session.execute(select(func.pg_advisory_xact_lock(GROUP_NAMES_LOCK)))
                key = person_key(normalised)
                taken = next((n for n in session.exec(orm_select(col(GroupRow.name))) if person_key(n) == key), None)
                if taken is not None:
                    raise AlreadyExistsError(f"Group '{normalised}' already exists (as '{taken}').")
                session.add(row)
                append_event(session, actor=actor, action="create_group", timestamp=now,
                             subject=f"group:{normalised}", after={"description": description})
        except IntegrityError as exc:
            raise AlreadyExistsError(f"Group '{normalised}' already exists.") from exc
        return Group(name=row.name, description=row.description, created_at=row.created_at, members=[])

    def list_groups(self, actor: Actor) -> list[Group]:
        """Every group with its members, by name."""
        require_role(actor, "admin", "list groups")
        with self._db.read() as session:
            groups = session.exec(orm_select(GroupRow).order_by(col(GroupRow.name))).all()
            members = session.exec(
                orm_select(col(GroupMemberRow.group_id), col(UserRow.name))
                .join(UserRow, col(UserRow.id) == col(GroupMemberRow.user_id))
                .order_by(col(UserRow.name))
            ).all()
        by_group: dict[int, list[str]] = {}
        for group_id, user in members:
            by_group.setdefault(group_id, []).append(user)
        return [_view(row, by_group.get(row.id or 0, [])) for row in groups]

    def get_group(self, actor: Actor, name: object) -> Group:
        """One group with its members."""
        require_role(actor, "admin", "read groups")
        with self._db.read() as session:
            row = self._group(session, name)
            return _view(row, self._members(session, row))

    def delete_group(self, actor: Actor, name: object) -> None:
        """Delete a group, its memberships and its grants; models it owned keep no owner."""
        require_role(actor, "admin", "delete groups")
        with self._db.write() as session:
            row = self._group(session, name)
            members = self._members(session, row)
            session.execute(delete(ModelGrantRow).where(
                col(ModelGrantRow.principal_kind) == "group", col(ModelGrantRow.principal_id) == row.id))
            session.delete(row)
            append_event(session, actor=actor, action="delete_group", timestamp=self._clock(),
                         subject=f"group:{row.name}", before={"members": members})

    def add_member(self, actor: Actor, *, group: object, user: object) -> Group:
        """Make ``user`` a member of ``group`` (already a member: nothing changes, nothing is audited)."""
        require_role(actor, "admin", "change group members")
        with self._db.write() as session:
            row, member = self._group(session, group), self._user(session, user)
            if self._join(session, row, member):
                append_event(session, actor=actor, action="add_group_member", timestamp=self._clock(),
                             subject=f"group:{row.name}", after={"user": member.name})
            return _view(row, self._members(session, row))

    def remove_member(self, actor: Actor, *, group: object, user: object) -> Group:
        """Remove ``user`` from ``group``; it stops being their primary group."""
        require_role(actor, "admin", "change group members")
        with self._db.write() as session:
            row, member = self._group(session, group), self._user(session, user)
            link = session.get(GroupMemberRow, (row.id, member.id))
            if link is None:
                raise NotFoundError(f"User '{member.name}' is not a member of group '{row.name}'.")
            session.delete(link)
            if member.primary_group_id == row.id:
                member.primary_group_id = None
                session.add(member)
            append_event(session, actor=actor, action="remove_group_member", timestamp=self._clock(),
                         subject=f"group:{row.name}", before={"user": member.name})
            return _view(row, self._members(session, row))

    def set_primary_group(self, actor: Actor, *, user: object, group: object | None) -> None:
        """Set the group that will own the models ``user`` creates (joining it if needed); None clears it."""
        require_role(actor, "admin", "set primary groups")
        with self._db.write() as session:
            member = self._user(session, user)
            before = self._group_name_of(session, member.primary_group_id)
            row = None if group is None else self._group(session, group)
            if row is not None:
                self._join(session, row, member)
            member.primary_group_id = None if row is None else row.id
            session.add(member)
            append_event(session, actor=actor, action="set_primary_group", timestamp=self._clock(),
                         subject=f"user:{member.name}", before={"primary_group": before},
                         after={"primary_group": None if row is None else row.name})

    @staticmethod
    def _join(session: Session, group: GroupRow, user: UserRow) -> bool:
        if session.get(GroupMemberRow, (group.id, user.id)) is not None:
            return False
        assert group.id is not None and user.id is not None
        session.add(GroupMemberRow(group_id=group.id, user_id=user.id))
        return True

    @staticmethod
    def _group(session: Session, name: object) -> GroupRow:
        normalised = group_name(name)
        row = session.exec(orm_select(GroupRow).where(col(GroupRow.name) == normalised)).first()
        if row is None:
            raise NotFoundError(f"Group '{normalised}' does not exist.")
        return row

    @staticmethod
    def _user(session: Session, name: object) -> UserRow:
        key = _user_key(name)
        row = session.exec(orm_select(UserRow).where(col(UserRow.name) == key)).first()
        if row is None:
            raise NotFoundError(f"User '{key}' does not exist.")
        return row

    @staticmethod
    def _members(session: Session, group: GroupRow) -> list[str]:
        return list(session.exec(
            orm_select(col(UserRow.name)).join(GroupMemberRow, col(GroupMemberRow.user_id) == col(UserRow.id))
            .where(col(GroupMemberRow.group_id) == group.id).order_by(col(UserRow.name))
        ).all())

    @staticmethod
    def _group_name_of(session: Session, group_id: int | None) -> str | None:
        if group_id is None:
            return None
        return session.exec(orm_select(col(GroupRow.name)).where(col(GroupRow.id) == group_id)).first()


def _view(row: GroupRow, members: list[str]) -> Group:
    return Group(name=row.name, description=row.description, created_at=row.created_at, members=members)
