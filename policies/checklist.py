"""Run a stage policy's checks over evidence, and decide sign-off from approvals.

Checks run in the order tests, metrics, signature, leakage, description; a section
that is missing or has ``enabled = false`` is skipped. ``run_check`` runs one check by
name so activities can run them independently. The sign-off rule is not a check: the
workflow feeds approvals to ``validate_approval``/``sign_off_decision``.

User names and roles are compared case-insensitively (after trimming), so ``Alice``
cannot approve a promotion requested by ``alice``.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from datetime import datetime
from typing import Any

from policies._base import Frozen
from policies.checks import check_description, check_leakage, check_metrics, check_signature, check_tests
from policies.evidence import Evidence
from policies.models import SignOffRule, StagePolicy
from policies.results import Checklist, CheckResult

__all__ = [
    "CHECK_NAMES",
    "Approval",
    "SignOffState",
    "configured_checks",
    "evaluate",
    "run_check",
    "sign_off_decision",
    "validate_approval",
]

_CHECKS: dict[str, Callable[[Evidence, Any], CheckResult]] = {
    "tests": check_tests,
    "metrics": check_metrics,
    "signature": check_signature,
    "leakage": check_leakage,
    "description": check_description,
}
CHECK_NAMES: tuple[str, ...] = tuple(_CHECKS)


def _rule(policy: StagePolicy, name: str) -> Any:
    rule = getattr(policy, name)
    return rule if rule is not None and rule.enabled else None


def configured_checks(policy: StagePolicy) -> list[str]:
    """Names of the checks this stage policy requires, in evaluation order."""
    return [name for name in CHECK_NAMES if _rule(policy, name) is not None]


def run_check(name: str, policy: StagePolicy, evidence: Evidence) -> CheckResult:
    """Run one configured check; a failed result (never an exception) for unknown or unconfigured names."""
    check = _CHECKS.get(name)
    rule = _rule(policy, name) if check is not None else None
    if check is None or rule is None:
        return CheckResult(name=name, passed=False, reasons=[f"check '{name}' is not configured in this policy"])
    return check(evidence, rule)


def evaluate(policy: StagePolicy, evidence: Evidence, *, policy_hash: str) -> Checklist:
    """Run every configured check; the checklist passes when all of them pass."""
    results = [run_check(name, policy, evidence) for name in configured_checks(policy)]
    return Checklist.of(results, policy_hash=policy_hash)


class Approval(Frozen):
    """One approval signal: who, with which roles, why and when."""

    user: str
    roles: list[str] = []
    comment: str = ""
    at: datetime


class SignOffState(Frozen):
    """Accepted approvers so far, how many are needed, and whether that is enough."""

    approved_by: list[str] = []
    needed: int
    satisfied: bool
    refused: list[str] = []

    @property
    def remaining(self) -> int:
        """Approvals still missing."""
        return max(self.needed - len(self.approved_by), 0)


def _key(user: str) -> str:
    return user.strip().casefold()


def validate_approval(
    rule: SignOffRule, requester: str, approver: str, roles: Collection[str], already_approved: Collection[str]
) -> str | None:
    """Why ``approver`` may not approve, or ``None`` if the approval counts."""
    if not approver.strip():
        return "an approval needs a user name"
    if rule.exclude_requester and _key(approver) == _key(requester):
        return f"'{approver}' requested this promotion and cannot approve it"
    if _key(rule.role) not in {_key(role) for role in roles}:
        return f"'{approver}' does not have the '{rule.role}' role"
    if _key(approver) in {_key(user) for user in already_approved}:
        return f"'{approver}' has already approved this promotion"
    return None


def sign_off_decision(rule: SignOffRule, *, requester: str, approvals: Sequence[Approval]) -> SignOffState:
    """Count the valid approvals in order (refused ones are listed with their reason)."""
    approved_by: list[str] = []
    refused: list[str] = []
    for approval in approvals:
        reason = validate_approval(rule, requester, approval.user, approval.roles, approved_by)
        if reason is None:
            approved_by.append(approval.user)
        else:
            refused.append(reason)
    return SignOffState(
        approved_by=approved_by, needed=rule.approvers, satisfied=len(approved_by) >= rule.approvers, refused=refused
    )
