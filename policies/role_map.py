"""Which Calabi roles a person signing in through OpenID Connect gets: the role map over the groups claim.

Pure functions; the settings parse ``CALABI_OIDC_ROLE_MAP`` with them, the sign-in applies them.
A person in no mapped group gets no role and is refused (``roles_for_groups`` answers ``()``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

__all__ = ["ROLES", "RoleMap", "expand_roles", "groups_in_claims", "parse_role_map", "roles_for_groups"]

ROLES = ("viewer", "engineer", "approver", "admin")
_IMPLIED = {
    "viewer": {"viewer"},
    "engineer": {"viewer", "engineer"},
    "approver": {"viewer", "approver"},
    "admin": set(ROLES),
}
MAX_GROUP_CHARS = 256
MAX_GROUPS = 1000

RoleMap = Mapping[str, tuple[str, ...]]
"""Group name (exactly as the provider sends it) to the roles its members get."""


def expand_roles(roles: Iterable[str]) -> frozenset[str]:
    """The granted roles with the roles they imply (admin implies every role)."""
    return frozenset(r for role in roles for r in _IMPLIED[role])


def parse_role_map(text: str) -> dict[str, tuple[str, ...]]:
    """Parse ``group=role,group=role,…`` (a group may appear more than once); ``ValueError`` names a bad entry."""
    mapping: dict[str, set[str]] = {}
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        group, sep, role = (s.strip() for s in entry.rpartition("="))
        role = role.lower()
        if not sep or not group:
            raise ValueError(f"role map entry '{entry}' is not group=role")
        if role not in ROLES:
            raise ValueError(f"role map entry '{entry}': '{role}' is not one of {', '.join(ROLES)}")
        mapping.setdefault(group, set()).add(role)
    return {group: tuple(sorted(roles)) for group, roles in mapping.items()}


def roles_for_groups(role_map: RoleMap, groups: Iterable[str]) -> tuple[str, ...]:
    """The union of the roles of every mapped group, sorted; ``()`` when no group is mapped."""
    return tuple(sorted({role for group in groups for role in role_map.get(group, ())}))


def groups_in_claims(claims: Mapping[str, object], claim: str) -> tuple[str, ...]:
    """The group names in ``claims[claim]``: a list of strings or one string; anything else is no groups.

    Names that are empty or longer than 256 characters are dropped; at most 1000 are read.
    """
    value = claims.get(claim)
    items = [value] if isinstance(value, str) else value if isinstance(value, list) else []
    names = [item.strip() for item in items[:MAX_GROUPS] if isinstance(item, str)]
    return tuple(dict.fromkeys(n for n in names if n and len(n) <= MAX_GROUP_CHARS))
