"""The role map over the groups claim (pure) and the name a person signing in gets."""

from __future__ import annotations

import pytest

from calabi.api.pages.oidc import Pending
from policies.role_map import expand_roles, groups_in_claims, parse_role_map, roles_for_groups
from registry_store.errors import InvalidParameterError
from registry_store.external_identities import display_name

ROLE_MAP = "churn-leads=approver, ml-eng=engineer,platform=ADMIN,ml-eng=approver,,o=Acme=viewer"


def test_the_role_map_parses_groups_with_several_roles_and_equals_signs_in_names() -> None:
    assert parse_role_map(ROLE_MAP) == {
        "churn-leads": ("approver",), "ml-eng": ("approver", "engineer"), "platform": ("admin",),
        "o=Acme": ("viewer",),  # the last '=' separates the role
    }
    assert parse_role_map("") == {} and parse_role_map(" , ") == {}


@pytest.mark.parametrize(("text", "message"), [
    ("churn-leads", "is not group=role"),
    ("=admin", "is not group=role"),
    ("churn-leads=owner", "'owner' is not one of viewer, engineer, approver, admin"),
    ("a=viewer,b=", "'' is not one of"),
])
def test_a_bad_role_map_entry_is_named(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_role_map(text)


def test_roles_are_the_union_over_mapped_groups_and_none_when_no_group_is_mapped() -> None:
    role_map = parse_role_map(ROLE_MAP)
    assert roles_for_groups(role_map, ["ml-eng", "churn-leads", "unknown"]) == ("approver", "engineer")
    assert roles_for_groups(role_map, ["Churn-Leads", "admin", "platform "]) == ()  # exact names only
    assert roles_for_groups(role_map, []) == ()
    assert expand_roles(roles_for_groups(role_map, ["platform"])) == {"viewer", "engineer", "approver", "admin"}


def test_the_groups_claim_is_a_list_of_names_or_one_name() -> None:
    assert groups_in_claims({"groups": ["a", " b ", "a", "", 7, None, "x" * 257]}, "groups") == ("a", "b")
    assert groups_in_claims({"roles": "platform"}, "roles") == ("platform",)
    assert groups_in_claims({"groups": {"a": 1}}, "groups") == ()
    assert groups_in_claims({}, "groups") == ()
    assert len(groups_in_claims({"groups": [f"g{i}" for i in range(5000)]}, "groups")) == 1000


def test_a_new_user_is_named_after_preferred_username_then_email_then_subject() -> None:
    assert display_name({"preferred_username": "ｄａｎａ", "email": "d@x", "sub": "1"}) == "dana"
    assert display_name({"preferred_username": "\u200b\u202e", "email": "d@x", "sub": "1"}) == "d@x"
    assert display_name({"sub": "abc"}) == "abc"
    with pytest.raises(InvalidParameterError):
        display_name({"email": 5})


def test_a_pending_sign_in_survives_its_cookie_and_garbage_is_no_sign_in() -> None:
    pending = Pending(state="s", nonce="n", verifier="v", next="/ui/tokens")
    assert Pending.decode(pending.encode()) == pending
    for garbage in (None, "", "not base64!", "W10=", "x" * 5000, "WyJhIiwiYiIsMywiZCJd"):
        assert Pending.decode(garbage) is None
