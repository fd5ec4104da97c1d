"""Check results: pass/fail, human-readable reasons and the numbers behind the decision."""

from __future__ import annotations

from collections.abc import Sequence

from policies._base import Frozen

__all__ = ["CheckResult", "Checklist", "Number"]


class Number(Frozen):
    """One compared quantity.

    ``delta`` is ``candidate - production`` when both exist (signed, rounded to 12 places),
    otherwise the distance to the threshold as documented by the check that made it.
    """

    label: str
    candidate: float | None = None
    production: float | None = None
    threshold: float | None = None
    delta: float | None = None


class CheckResult(Frozen):
    """The outcome of one check; ``reasons`` explain failures (and notable passes)."""

    name: str
    passed: bool
    reasons: list[str] = []
    numbers: list[Number] = []


class Checklist(Frozen):
    """All configured checks for one promotion, and the policy hash they ran under."""

    results: list[CheckResult] = []
    passed: bool
    policy_hash: str

    @classmethod
    def of(cls, results: Sequence[CheckResult], *, policy_hash: str) -> Checklist:
        """A checklist that passes when every result passes (an empty one passes)."""
        return cls(results=list(results), passed=all(r.passed for r in results), policy_hash=policy_hash)

    def result(self, name: str) -> CheckResult | None:
        """The result of the check called ``name``, if it ran."""
        return next((r for r in self.results if r.name == name), None)
