"""Pure check functions: ``(evidence, rule) -> CheckResult``. They never raise.

Conventions for ``Number``: ``delta`` is ``candidate - production`` for comparisons with
Production and ``candidate - threshold`` for absolute thresholds and shares (signed,
rounded to 12 decimal places). Comparisons allow a 1e-9 float slack.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable
from datetime import date
from typing import TypeVar

from policies.evidence import Evidence, SchemaField, SignatureSchema, VersionEvidence
from policies.models import DescriptionRule, LeakageRule, MetricsRule, SignatureRule, TestsRule
from policies.results import CheckResult, Number

__all__ = [
    "DATE_RANGE",
    "SCALE_DEPENDENT",
    "check_description",
    "check_leakage",
    "check_metrics",
    "check_signature",
    "check_tests",
    "type_compatible",
]

EPSILON = 1e-9
RuleT = TypeVar("RuleT")
Check = Callable[[Evidence, RuleT], CheckResult]


def _never_raises(name: str) -> Callable[[Check[RuleT]], Check[RuleT]]:
    def decorate(check: Check[RuleT]) -> Check[RuleT]:
        @functools.wraps(check)
        def guarded(evidence: Evidence, rule: RuleT) -> CheckResult:
            try:
                return check(evidence, rule)
            except Exception as exc:  # a check must report, not crash the checklist
                return _fail(name, f"check failed to run: {type(exc).__name__}: {exc}")

        return guarded

    return decorate


def _delta(a: float, b: float) -> float:
    return round(a - b, 12)


def _v(version: VersionEvidence) -> str:
    return f"v{version.version}"


# --- tests -----------------------------------------------------------------------------


@_never_raises("tests")
def check_tests(evidence: Evidence, rule: TestsRule) -> CheckResult:
    """Tests passed: the command run (exit 0, no failures, no timeout) or the attestation tag is "true"."""
    if rule.mode == "attestation":
        value = evidence.candidate.tags.get(rule.attestation_tag)
        if value is None:
            return _fail("tests", f"candidate {_v(evidence.candidate)} has no '{rule.attestation_tag}' tag")
        if value.strip().lower() != "true":
            return _fail("tests", f"tag '{rule.attestation_tag}' is {value!r}, not 'true'")
        return CheckResult(name="tests", passed=True)

    run = evidence.test_run
    if run is None:
        return _fail("tests", "no test run recorded for the candidate")
    numbers = [
        Number(label="failed", candidate=run.failed, threshold=0, delta=run.failed),
        Number(label="passed", candidate=run.passed),
        Number(
            label="duration_s",
            candidate=run.duration_s,
            threshold=rule.timeout_s,
            delta=_delta(run.duration_s, rule.timeout_s),
        ),
    ]
    if run.exit_code is not None:
        numbers.insert(0, Number(label="exit_code", candidate=run.exit_code, threshold=0, delta=run.exit_code))
    reasons: list[str] = []
    if run.timed_out:
        reasons.append(f"test command timed out after {rule.timeout_s:g}s")
    elif run.exit_code is None:
        reasons.append("test command did not report an exit code")
    elif run.exit_code != 0:
        reasons.append(f"test command exited with code {run.exit_code}")
    if run.failed:
        reasons.append(f"{run.failed} test{'s' if run.failed != 1 else ''} failed")
    return CheckResult(name="tests", passed=not reasons, reasons=reasons, numbers=numbers)


# --- metrics ---------------------------------------------------------------------------


def _metric(version: VersionEvidence, metric: str, who: str, reasons: list[str]) -> float | None:
    value = version.metrics.get(metric)
    if value is None:
        reasons.append(f"{who} {_v(version)} has no '{metric}' metric")
        return None
    if not math.isfinite(value):
        reasons.append(f"{who} {_v(version)} '{metric}' is {value}, not a finite number")
        return None
    return value


@_never_raises("metrics")
def check_metrics(evidence: Evidence, rule: MetricsRule) -> CheckResult:
    """Candidate strictly beats Production on the primary metric by at least ``min_improvement``,
    no guardrail degrades beyond its tolerance; with no incumbent, absolute thresholds only."""
    reasons: list[str] = []
    numbers: list[Number] = []
    candidate, incumbent = evidence.candidate, evidence.incumbent
    primary = _metric(candidate, rule.primary, "candidate", reasons)

    if incumbent is None:
        for metric, threshold in rule.absolute_thresholds.items():
            value = primary if metric == rule.primary else _metric(candidate, metric, "candidate", reasons)
            if value is None:
                continue
            numbers.append(Number(label=metric, candidate=value, threshold=threshold, delta=_delta(value, threshold)))
            if rule.direction_of(metric) == "maximize" and value < threshold - EPSILON:
                reasons.append(f"{metric} {value:g} is below the minimum {threshold:g} for a first Production version")
            elif rule.direction_of(metric) == "minimize" and value > threshold + EPSILON:
                reasons.append(f"{metric} {value:g} is above the maximum {threshold:g} for a first Production version")
        if primary is not None and rule.primary not in rule.absolute_thresholds:
            numbers.insert(0, Number(label=rule.primary, candidate=primary))
        passed = not reasons
        if passed and not rule.absolute_thresholds:
            reasons.append("no Production version to compare against and no absolute thresholds configured")
        return CheckResult(name="metrics", passed=passed, reasons=reasons, numbers=numbers)

    production = _metric(incumbent, rule.primary, "Production", reasons)
    if primary is not None and production is not None:
        improvement = primary - production if rule.direction == "maximize" else production - primary
        numbers.append(
            Number(
                label=rule.primary,
                candidate=primary,
                production=production,
                threshold=rule.min_improvement,
                delta=_delta(primary, production),
            )
        )
        if improvement <= EPSILON or improvement < rule.min_improvement - EPSILON:
            needed = f" by at least {rule.min_improvement:g}" if rule.min_improvement > 0 else ""
            reasons.append(
                f"{rule.primary} {primary:g} does not beat Production {_v(incumbent)} ({production:g}){needed} "
                f"({rule.direction}; change {_delta(primary, production):+g})"
            )
    for guardrail in rule.guardrails:
        value = _metric(candidate, guardrail.metric, "candidate", reasons)
        reference = _metric(incumbent, guardrail.metric, "Production", reasons)
        if value is None or reference is None:
            continue
        numbers.append(
            Number(
                label=guardrail.metric,
                candidate=value,
                production=reference,
                threshold=guardrail.tolerance,
                delta=_delta(value, reference),
            )
        )
        worse = reference - value if guardrail.direction == "maximize" else value - reference
        if worse > guardrail.tolerance + EPSILON:
            reasons.append(
                f"guardrail {guardrail.metric} got worse by {round(worse, 12):g} ({value:g} vs Production "
                f"{reference:g}; {guardrail.direction}), beyond the tolerance {guardrail.tolerance:g}"
            )
    return CheckResult(name="metrics", passed=not reasons, reasons=reasons, numbers=numbers)


# --- signature -------------------------------------------------------------------------

# serving type -> candidate types that accept it without loss
_ACCEPTS: dict[str, frozenset[str]] = {
    "boolean": frozenset({"boolean"}),
    "integer": frozenset({"integer", "long", "float", "double"}),
    "long": frozenset({"long", "double"}),
    "float": frozenset({"float", "double"}),
    "double": frozenset({"double"}),
    "string": frozenset({"string"}),
    "binary": frozenset({"binary"}),
    "datetime": frozenset({"datetime"}),
}


def type_compatible(serving: str, candidate: str) -> bool:
    """Whether a candidate input of type ``candidate`` accepts values the server sends as ``serving``.

    Identical types always match; otherwise only widening: integer → long/float/double,
    long → double, float → double. Strings, booleans, binary, datetimes, nested and tensor
    types accept only themselves.
    """
    return serving == candidate or candidate in _ACCEPTS.get(serving, frozenset())


def _reference(evidence: Evidence) -> tuple[SignatureSchema | None, str]:
    if evidence.serving_schema is not None:
        return evidence.serving_schema, "the serving schema"
    if evidence.incumbent is not None and evidence.incumbent.signature is not None:
        return evidence.incumbent.signature, f"the Production {_v(evidence.incumbent)} signature"
    return None, ""


def _compare_inputs(
    serving: list[SchemaField], candidate: SignatureSchema, rule: SignatureRule, source: str
) -> list[str]:
    reasons: list[str] = []
    served = {field.name: field for field in serving}
    for field in serving:
        mine = candidate.input(field.name)
        if mine is None:
            reasons.append(f"input '{field.name}' ({field.type}) in {source} is missing from the candidate signature")
        elif not type_compatible(field.type, mine.type):
            reasons.append(f"input '{field.name}' is {mine.type} in the candidate but {field.type} in {source}")
        elif mine.required and not field.required:
            reasons.append(f"input '{field.name}' is required by the candidate but optional in {source}")
    for field in candidate.inputs:
        if field.name in served:
            continue
        if field.required:
            reasons.append(f"new required input '{field.name}' ({field.type}) is not sent according to {source}")
        elif not rule.allow_extra_optional_inputs:
            reasons.append(f"new optional input '{field.name}' is not in {source} (extra optional inputs not allowed)")
    return reasons


@_never_raises("signature")
def check_signature(evidence: Evidence, rule: SignatureRule) -> CheckResult:
    """Candidate inputs are compatible with the serving schema (else the Production signature)."""
    candidate = evidence.candidate.signature
    if candidate is None:
        return _fail("signature", f"candidate {_v(evidence.candidate)} has no model signature")
    reference, source = _reference(evidence)
    if reference is None:
        return CheckResult(
            name="signature",
            passed=True,
            reasons=["no serving schema and no Production signature to compare against"],
            numbers=[Number(label="inputs", candidate=len(candidate.inputs))],
        )
    reasons = _compare_inputs(reference.inputs, candidate, rule, source)
    numbers = [
        Number(
            label="inputs",
            candidate=len(candidate.inputs),
            production=len(reference.inputs),
            delta=len(candidate.inputs) - len(reference.inputs),
        )
    ]
    return CheckResult(name="signature", passed=not reasons, reasons=reasons, numbers=numbers)


# --- leakage ---------------------------------------------------------------------------


SCALE_DEPENDENT = (
    "raw coefficients of a linear model without a scaler depend on feature scale; not compared as shares "
    "— record importances or put a scaler in front"
)


@_never_raises("leakage")
def check_leakage(evidence: Evidence, rule: LeakageRule) -> CheckResult:
    """No feature holds more than ``max_feature_share`` of total |importance|; no forbidden feature name.

    Forbidden patterns are searched (``re.search``) in the importance names and the
    candidate's signature input names. Importances that depend on feature scale are never
    compared as shares (the result says why); a candidate with no importances fails, or passes as
    not applicable when ``rule.when_unavailable`` says so.
    """
    candidate = evidence.candidate
    importances = candidate.feature_importances
    reasons: list[str] = []
    notes: list[str] = []
    numbers: list[Number] = []
    if not importances:
        why = f" ({candidate.importances_note})" if candidate.importances_note else ""
        if rule.when_unavailable == "not_applicable":
            notes.append(f"not applicable: the model exposes no feature importances{why}")
        else:
            reasons.append(f"no feature importances recorded{why}")
    elif candidate.importances_scale_dependent:
        notes.append(SCALE_DEPENDENT)
    else:
        reasons, numbers = _share_review(importances, rule)
    names = set(importances)
    if candidate.signature is not None:
        names.update(field.name for field in candidate.signature.inputs)
    for name in sorted(names):
        pattern = next((p for p in rule.forbidden_patterns if re.search(p, name)), None)
        if pattern is not None:
            reasons.append(f"feature '{name}' matches the forbidden pattern '{pattern}'")
    return CheckResult(name="leakage", passed=not reasons, reasons=reasons + notes, numbers=numbers)


def _share_review(importances: dict[str, float], rule: LeakageRule) -> tuple[list[str], list[Number]]:
    """Reasons and numbers of the dominant-feature review (comparable importances only)."""
    reasons: list[str] = []
    numbers: list[Number] = []
    bad = sorted(name for name, value in importances.items() if not math.isfinite(value))
    if bad:
        return [f"feature importance of {', '.join(map(repr, bad))} is not a finite number"], []
    total = sum(abs(value) for value in importances.values())
    if total == 0:
        return ["feature importances are all zero"], []
    shares = sorted(((abs(v) / total, name) for name, v in importances.items()), key=lambda s: (-s[0], s[1]))
    for share, name in shares:
        if share <= rule.max_feature_share + EPSILON and numbers:
            break
        numbers.append(
            Number(
                label=name,
                candidate=round(share, 12),
                threshold=rule.max_feature_share,
                delta=_delta(share, rule.max_feature_share),
            )
        )
        if share > rule.max_feature_share + EPSILON:
            reasons.append(
                f"feature '{name}' has {share:.1%} of the total importance, "
                f"above the maximum share {rule.max_feature_share:.1%}"
            )
    return reasons, numbers


# --- description -----------------------------------------------------------------------

_ISO_DATE = r"\d{4}-\d{2}-\d{2}"
DATE_RANGE = re.compile(
    rf"(?<!\d)(?P<start>{_ISO_DATE})\s*(?:\.\.\.?|…|–|—|-|to|through|until|till|and)\s*(?P<end>{_ISO_DATE})(?!\d)",
    re.IGNORECASE,
)
"""Training-data date range: two ISO dates joined by to/through/until/and, '-', '–', '—', '..' or '…'
(so "from 2024-01-01 to 2025-06-30" and "between … and …" match too); start ≤ end."""

_NUMBER = r"(?P<value>[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?)"


def _metric_pattern(name: str) -> re.Pattern[str]:
    """``name`` (``_``, ``-`` and space interchangeable) then an optional ``(...)``, a ``:``/``=``/
    is/of/was/at/≈ joiner and a number, on the same line, case-insensitive."""
    words = "[_ -]".join(re.escape(part) for part in re.split(r"[_ -]", name))
    return re.compile(
        rf"(?<![\w.]){words}(?!\w)[ \t]*(?:\([^)\n]{{0,40}}\)[ \t]*)?(?:(?::|=|is|of|was|at|≈|~)[ \t]*)?{_NUMBER}",
        re.IGNORECASE,
    )


def _date_range(text: str) -> tuple[int | None, str | None]:
    """(days covered, None) for the first valid range, else (None, why not)."""
    problem = "no training-data date range (e.g. '2024-01-01 to 2025-06-30') in the description"
    for match in DATE_RANGE.finditer(text):
        try:
            start, end = date.fromisoformat(match["start"]), date.fromisoformat(match["end"])
        except ValueError:
            problem = f"date range '{match[0]}' is not made of valid calendar dates"
            continue
        if start > end:
            problem = f"date range '{match[0]}' ends before it starts"
            continue
        return (end - start).days, None
    return None, problem


@_never_raises("description")
def check_description(evidence: Evidence, rule: DescriptionRule) -> CheckResult:
    """The description states the training-data date range and each required metric with a value."""
    text = evidence.candidate.description
    reasons: list[str] = []
    numbers: list[Number] = []
    if not text.strip():
        reasons.append("description is empty")
    if rule.require_date_range:
        days, problem = _date_range(text)
        if problem is not None:
            reasons.append(problem)
        else:
            numbers.append(Number(label="date_range_days", candidate=days))
    for metric in rule.required_metrics:
        match = _metric_pattern(metric).search(text)
        if match is None:
            reasons.append(f"key metric '{metric}' with its value is not in the description")
        else:
            numbers.append(Number(label=metric, candidate=float(match["value"])))
    return CheckResult(name="description", passed=not reasons, reasons=reasons, numbers=numbers)


def _fail(name: str, reason: str) -> CheckResult:
    return CheckResult(name=name, passed=False, reasons=[reason])
