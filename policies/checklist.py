"""Run a stage policy's checks over evidence.

Checks run in the order tests, metrics, signature, leakage, description; a section
that is missing or has ``enabled = false`` is skipped. ``run_check`` runs one check by
name so activities can run them independently. The sign-off rule is not a check: who may
decide what lives in ``policies.decisions``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from policies.checks import check_description, check_leakage, check_metrics, check_signature, check_tests
from policies.evidence import Evidence
from policies.models import StagePolicy
from policies.results import Checklist, CheckResult

__all__ = ["CHECK_NAMES", "configured_checks", "evaluate", "run_check"]

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
