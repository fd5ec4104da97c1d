"""Sign-off from the right people: a quorum per group (an assignment of people to group slots), separation of
duties from the requester and the training run's author, and risk tiers overlaid on the default policy."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from policies.decisions import (
    Action,
    Approval,
    PromotionFacts,
    RefusalKind,
    Signer,
    quorum_assignment,
    refusal,
    sign_off_decision,
)
from policies.errors import PolicyError
from policies.loading import declared_tiers, default_policy_text, load_policy
from policies.models import GroupQuorum, SignOffRule
from policies.status import PromotionStatus as S

AT = datetime(2026, 4, 1, 9, 0, tzinfo=UTC)
CHURN, RISK = "churn-leads", "model-risk"
CHURN_ONLY = SignOffRule(from_=[GroupQuorum(group=CHURN)])
RISK_ONLY = SignOffRule(from_=[GroupQuorum(group=RISK)])
TWO_GROUPS = SignOffRule(from_=[GroupQuorum(group=CHURN), GroupQuorum(group=RISK)])
FORBIDDEN, CONFLICT = RefusalKind.FORBIDDEN, RefusalKind.CONFLICT


def approval(user: str, *groups: str, roles: tuple[str, ...] = ("approver",)) -> Approval:
    return Approval(user=user, groups=list(groups), roles=list(roles), at=AT)


def sign(rule: SignOffRule, user: str, *groups: str, signed: tuple[Signer, ...] = (), run_author: str = "erin",
         roles: tuple[str, ...] = ("approver",)) -> RefusalKind | None:
    """The refusal (None: allowed) of ``user`` in ``groups`` signing a promotion requested by carol."""
    facts = PromotionFacts(status=S.AWAITING_SIGN_OFF, requester="carol", run_author=run_author, sign_off=rule,
                           signers=list(signed))
    refused = refusal(Action.SIGN_OFF, user=user, roles=roles, groups=groups, promotion=facts)
    return refused.kind if refused else None


# ------------------------------------------------------------------------------ the assignment


def test_a_person_in_both_groups_counts_once() -> None:
    both = approval("alice", CHURN, RISK)
    state = sign_off_decision(TWO_GROUPS, requester="carol", approvals=[both])
    assert (state.satisfied, state.approved_by, state.needed, len(state.missing)) == (False, ["alice"], 2, 1)
    assert sign(TWO_GROUPS, "ALICE", CHURN, RISK, signed=(both,)) == CONFLICT  # the same person again


def test_an_earlier_signer_in_both_groups_moves_to_let_a_later_one_in() -> None:
    """Greedy would give alice the churn slot and refuse bob; the assignment moves alice to model-risk."""
    alice, bob = approval("alice", CHURN, RISK), approval("bob", CHURN)
    assert sign(TWO_GROUPS, "bob", CHURN, signed=(alice,)) is None
    state = sign_off_decision(TWO_GROUPS, requester="carol", approvals=[alice, bob])
    assert (state.satisfied, state.approved_by, state.missing) == (True, ["alice", "bob"], {})
    assert quorum_assignment(TWO_GROUPS, [alice, bob]) == [1, 0]  # churn's slot: bob; model-risk's: alice


def test_a_churn_only_quorum_refuses_model_risk_and_vice_versa() -> None:
    assert sign(CHURN_ONLY, "rita", RISK) == FORBIDDEN
    assert sign(RISK_ONLY, "bob", CHURN) == FORBIDDEN
    assert sign(CHURN_ONLY, "bob", CHURN) is None and sign(RISK_ONLY, "rita", RISK) is None
    assert sign(CHURN_ONLY, "nobody") == FORBIDDEN  # in no group at all
    refused = refusal(Action.SIGN_OFF, user="rita", roles=["approver"], groups=[RISK], promotion=PromotionFacts(
        status=S.AWAITING_SIGN_OFF, requester="carol", sign_off=CHURN_ONLY))
    assert refused is not None and refused.message == (
        "'rita' may not sign off this promotion: it needs sign-offs from members of churn-leads, "
        "and 'rita' is in none of these groups.")
    # The workflow's count refuses it too (a sign-off that reached it some other way).
    state = sign_off_decision(CHURN_ONLY, requester="carol", approvals=[approval("rita", RISK)])
    assert (state.satisfied, state.approved_by, len(state.refused)) == (False, [], 1)


def test_a_high_tier_quorum_needs_both_groups() -> None:
    bob = approval("bob", CHURN)
    assert not sign_off_decision(TWO_GROUPS, requester="carol", approvals=[bob]).satisfied
    assert sign(TWO_GROUPS, "dave", CHURN, signed=(bob,)) == CONFLICT  # churn has its sign-off
    refused = refusal(Action.SIGN_OFF, user="dave", roles=["approver"], groups=[CHURN], promotion=PromotionFacts(
        status=S.AWAITING_SIGN_OFF, requester="carol", sign_off=TWO_GROUPS, signers=[bob]))
    assert refused is not None and "still needed: model-risk (1)" in refused.message
    state = sign_off_decision(TWO_GROUPS, requester="carol",
                              approvals=[bob, approval("dave", CHURN), approval("rita", RISK)])
    assert (state.satisfied, state.approved_by, len(state.refused)) == (True, ["bob", "rita"], 1)


def test_counts_per_group_and_names_compared_normalised() -> None:
    rule = SignOffRule(from_=[GroupQuorum(group="Churn-Leads", count=2), GroupQuorum(group=RISK)])
    assert rule.needed == 3
    approvals = [approval("bob", "churn-leads"), approval("dave", "ＣＨＵＲＮ-leads", RISK), approval("rita", RISK)]
    state = sign_off_decision(rule, requester="carol", approvals=approvals)
    assert (state.satisfied, state.approved_by) == (True, ["bob", "dave", "rita"])
    assert sign_off_decision(rule, requester="carol", approvals=approvals[:2]).missing == {"model-risk": 1}


# ------------------------------------------------------------------------------ separation of duties


@pytest.mark.parametrize("rule", [SignOffRule(), TWO_GROUPS], ids=["count", "groups"])
def test_the_requester_and_the_run_author_cannot_sign(rule: SignOffRule) -> None:
    assert sign(rule, "Carol", CHURN) == FORBIDDEN
    assert sign(rule, "ｅｒｉｎ", CHURN, run_author="Erin") == FORBIDDEN  # NFKC + case folding
    allowed = rule.model_copy(update={"exclude_run_author": False, "exclude_requester": False})
    assert sign(allowed, "erin", CHURN) is None and sign(allowed, "carol", CHURN) is None
    state = sign_off_decision(rule, requester="carol", run_author="erin", approvals=[approval("erin", CHURN)])
    assert state.approved_by == [] and "author of the candidate's training run" in state.refused[0]


def test_no_run_author_known_refuses_nobody_for_it() -> None:
    assert sign(SignOffRule(), "erin", run_author="") is None


# ------------------------------------------------------------------------------ the rule in TOML


def test_from_replaces_the_count_and_keeps_old_hashes(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "churn.toml").write_text(
        '[[production.sign_off.from]]\ngroup = "churn-leads"\ncount = 1\n'
        '[[production.sign_off.from]]\ngroup = "model-risk"\ncount = 1\n')
    rule = load_policy(tmp_path, "churn").policy.production.sign_off
    assert rule is not None and rule.needed == 2 and [q.group for q in rule.from_] == [CHURN, RISK]
    assert SignOffRule.model_validate(rule.model_dump(mode="json")) == rule  # stored and read back as "from"
    assert "from" not in SignOffRule().model_dump(mode="json")  # policies without groups hash as before
    assert "exclude_run_author" not in SignOffRule().model_dump(mode="json")
    with pytest.raises(ValueError, match="group listed more than once"):
        SignOffRule.model_validate({"from": [{"group": "a"}, {"group": "A"}]})


# ------------------------------------------------------------------------------ risk tiers

HIGH = """
[tiers.high.production.tests]
mode = "command"
command = ["pytest", "{artifact_dir}"]

[tiers.high.production.sign_off]
expires_after = "2d"

[[tiers.high.production.sign_off.from]]
group = "churn-leads"

[[tiers.high.production.sign_off.from]]
group = "model-risk"

[tiers.low.production.sign_off]
reminder_every = "3d"
"""


def policy_dir(tmp_path: Path, tiers: str = HIGH, override: str = "") -> Path:
    (tmp_path / "models").mkdir(parents=True, exist_ok=True)
    (tmp_path / "default.toml").write_text(default_policy_text() + tiers)
    if override:
        (tmp_path / "models" / "churn.toml").write_text(override)
    return tmp_path


def test_tier_overlay_sits_between_the_default_and_the_override(tmp_path: Path) -> None:
    directory = policy_dir(tmp_path, override="[production.sign_off]\nexpires_after = \"1d\"\n")
    assert declared_tiers(directory) == ["high", "low"]
    untiered = load_policy(directory, "other")
    assert untiered.tier is None and untiered.policy.production.tests is not None
    assert untiered.policy.production.tests.mode == "attestation"
    assert untiered == load_policy(policy_dir(tmp_path / "plain", tiers=""), "other").model_copy(
        update={"sources": untiered.sources})  # declaring tiers changes nothing for untiered models

    high = load_policy(directory, "fraud", tier="high")
    rule = high.policy.production.sign_off
    assert high.tier == "high" and rule is not None and high.policy.production.tests is not None
    assert (high.policy.production.tests.mode, rule.needed, rule.expires_after) == ("command", 2, timedelta(days=2))
    assert rule.role == "approver" and high.content_hash != untiered.content_hash  # the rest is the default's

    churn = load_policy(directory, "churn", tier="high").policy.production.sign_off
    assert churn is not None and (churn.expires_after, churn.needed) == (timedelta(days=1), 2)  # override wins


def test_an_undeclared_or_broken_tier_is_refused_naming_it(tmp_path: Path) -> None:
    directory = policy_dir(tmp_path)
    with pytest.raises(PolicyError, match=re.escape("risk tier 'medium' is not declared (declared: high, low)")):
        load_policy(directory, "churn", tier="medium")
    broken = policy_dir(tmp_path / "broken", tiers='[tiers.high.production.sign_off]\napprovers = "two"\n')
    with pytest.raises(PolicyError) as info:
        load_policy(broken, "churn")  # every declared tier is validated at each load
    assert info.value.field == "tiers.high.production.sign_off.approvers"
    assert str(info.value).startswith(f"{broken / 'default.toml'}: tiers.high.production.sign_off.approvers:")


def test_the_packaged_example_tier_is_valid_once_uncommented(tmp_path: Path) -> None:
    text = default_policy_text()
    assert declared_tiers(tmp_path) == []  # commented out: declares nothing
    example = text[text.index("# [tiers.high"):]
    uncommented = "\n".join(line.removeprefix("# ") for line in example.splitlines() if line != "#")
    (tmp_path / "default.toml").write_text(text + "\n" + uncommented + "\n")
    high = load_policy(tmp_path, "churn", tier="high").policy.production
    assert high.sign_off is not None and high.tests is not None
    assert (high.tests.mode, high.sign_off.needed, high.sign_off.expires_after) == ("command", 2, timedelta(days=2))
