"""The groups a user belongs to, read in the same query that authenticates them."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlmodel import col

from registry_store.tables import GroupMemberRow, GroupRow

__all__ = ["groups_column", "parse_groups"]

_SEPARATOR = "\x1f"
"""Joins the names in the aggregate; a control character, which group names never contain."""


def groups_column(user_id: ColumnElement[Any] | Any) -> ColumnElement[Any]:
    """A scalar subquery: the names of the groups of the user whose id is ``user_id``, joined (NULL: none)."""
    return (
        select(func.aggregate_strings(col(GroupRow.name), _SEPARATOR))
        .join(GroupMemberRow, col(GroupMemberRow.group_id) == col(GroupRow.id))
        .where(col(GroupMemberRow.user_id) == user_id)
        .scalar_subquery()
        .label("group_names")
    )


def parse_groups(joined: str | None) -> frozenset[str]:
    """The group names of a ``groups_column`` value."""
    return frozenset(joined.split(_SEPARATOR)) if joined else frozenset()
