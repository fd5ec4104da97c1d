"""The promotion policy schema (validated from TOML by ``policies.loading``).

A ``PromotionPolicy`` has one ``StagePolicy`` per kind of promotion: ``production``,
``staging`` and ``rollback`` (re-promoting the previous Production version). Each check
section is optional: a missing section, or one with ``enabled = false``, is not run.
Because a per-model override is deep-merged into the default (tables merge), an override
switches a default check off with ``enabled = false`` rather than by omitting it.

Metric directions: ``absolute_thresholds`` (used only when there is no Production
incumbent) take each metric's direction from ``primary``/``direction`` or from the
guardrail of the same metric, so a threshold on a maximize metric is a minimum and on
a minimize metric a maximum. A threshold on a metric that is neither the primary nor a
guardrail is refused at load.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Annotated, ClassVar, Literal

from pydantic import AfterValidator, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer, model_validator

from policies._base import Frozen
from policies.durations import Duration

__all__ = [
    "BreakGlassRule",
    "DescriptionRule",
    "Direction",
    "GroupQuorum",
    "Guardrail",
    "LeakageRule",
    "MetricsRule",
    "PromotionPolicy",
    "SignOffRule",
    "SignatureRule",
    "StagePolicy",
    "TestsRule",
]

Direction = Literal["maximize", "minimize"]
ARTIFACT_DIR = "{artifact_dir}"


def _regex(pattern: str) -> str:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"invalid regular expression {pattern!r}: {exc}") from None
    return pattern


Name = Annotated[str, Field(min_length=1, max_length=250)]
Regex = Annotated[str, Field(min_length=1, max_length=1000), AfterValidator(_regex)]


class _Rule(Frozen):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class TestsRule(_Rule):
    """Automated tests: run ``command`` against the artifact, or trust a CI attestation tag.

    ``command`` is an argv list; every occurrence of ``{artifact_dir}`` in an argument is
    replaced by the downloaded artifact directory. ``attestation`` mode passes when the
    candidate's tag ``attestation_tag`` has the value ``"true"`` (case-insensitive).
    """

    __test__: ClassVar[bool] = False

    enabled: bool = True
    mode: Literal["command", "attestation"] = "attestation"
    command: list[Annotated[str, Field(min_length=1)]] = []
    timeout_s: float = Field(default=1800.0, gt=0, le=86400)
    attestation_tag: Name = "ci.tests_passed"

    @model_validator(mode="after")
    def _command_needed(self) -> TestsRule:
        if self.mode == "command" and not self.command:
            raise ValueError("mode 'command' needs a non-empty 'command' list")
        return self

    def render_command(self, artifact_dir: str) -> list[str]:
        """The argv to run, with ``{artifact_dir}`` substituted (no other formatting)."""
        return [argument.replace(ARTIFACT_DIR, artifact_dir) for argument in self.command]


class Guardrail(_Rule):
    """A secondary metric that may not get worse than Production by more than ``tolerance``."""

    metric: Name
    direction: Direction
    tolerance: float = Field(default=0.0, ge=0)


class MetricsRule(_Rule):
    """Candidate metrics against the Production incumbent (or absolute thresholds for the first)."""

    enabled: bool = True
    primary: Name
    direction: Direction = "maximize"
    min_improvement: float = Field(default=0.0, ge=0)
    guardrails: list[Guardrail] = []
    absolute_thresholds: dict[Name, float] = {}

    @model_validator(mode="after")
    def _consistent(self) -> MetricsRule:
        names = [guardrail.metric for guardrail in self.guardrails]
        if self.primary in names:
            raise ValueError(f"metric {self.primary!r} is the primary metric and cannot also be a guardrail")
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"guardrail metric listed more than once: {', '.join(duplicates)}")
        unknown = sorted(set(self.absolute_thresholds) - {self.primary, *names})
        if unknown:
            raise ValueError(
                f"absolute threshold for {', '.join(map(repr, unknown))} has no direction: "
                "the metric must be the primary metric or a guardrail"
            )
        return self

    def direction_of(self, metric: str) -> Direction:
        """The direction of ``metric`` (primary or guardrail)."""
        if metric == self.primary:
            return self.direction
        return next(g.direction for g in self.guardrails if g.metric == metric)


class SignatureRule(_Rule):
    """Candidate input signature against the live serving schema (or the Production signature)."""

    enabled: bool = True
    allow_extra_optional_inputs: bool = True


class LeakageRule(_Rule):
    """Feature-importance review: no dominant feature, no forbidden feature name.

    ``when_unavailable`` says what a candidate with no importances at all (none recorded, and the model
    exposes none) gets: ``fail`` (the default), or ``not_applicable`` (the share review passes, saying why).
    """

    enabled: bool = True
    max_feature_share: float = Field(default=0.5, gt=0, le=1)
    forbidden_patterns: list[Regex] = []
    when_unavailable: Literal["fail", "not_applicable"] = "fail"


class DescriptionRule(_Rule):
    """The version description documents the training-data date range and key metrics."""

    enabled: bool = True
    require_date_range: bool = True
    required_metrics: list[Name] = []


class GroupQuorum(_Rule):
    """``count`` distinct sign-offs from members of ``group`` (TOML ``[[<stage>.sign_off.from]]``)."""

    group: Name
    count: int = Field(default=1, ge=1, le=20)


class SignOffRule(_Rule):
    """Human sign-off, consumed by the workflow: ``approvers`` distinct users holding ``role``.

    ``from`` (a quorum per group) replaces the plain count: each group needs its ``count``
    sign-offs from its members, and one person fills one slot even when in several groups.
    Serialised without ``from`` when empty and without ``exclude_run_author`` when true, so a
    policy that uses neither hashes as it did before they existed.
    """

    model_config = ConfigDict(validate_by_name=True, validate_by_alias=True)

    approvers: int = Field(default=1, ge=0, le=20)
    role: Name = "approver"
    from_: list[GroupQuorum] = Field(default=[], alias="from", max_length=20)
    exclude_requester: bool = True
    exclude_run_author: bool = True
    reminder_every: Duration = timedelta(days=1)
    expires_after: Duration = timedelta(days=7)

    @model_validator(mode="after")
    def _groups_once(self) -> SignOffRule:
        names = [quorum.group.strip().casefold() for quorum in self.from_]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"group listed more than once in 'from': {', '.join(duplicates)}")
        return self

    @model_serializer(mode="wrap")
    def _serialise(self, handler: SerializerFunctionWrapHandler) -> dict[str, object]:
        data: dict[str, object] = handler(self)
        quorum = data.pop("from_", None)
        if quorum:
            data["from"] = quorum
        if data.get("exclude_run_author") is True:
            del data["exclude_run_author"]
        return data

    @property
    def needed(self) -> int:
        """How many sign-offs make an approval: the sum of the group counts, else ``approvers``."""
        return sum(quorum.count for quorum in self.from_) if self.from_ else self.approvers

    def expires_at(self, requested_at: datetime) -> datetime:
        """When a request made at ``requested_at`` expires."""
        return requested_at + self.expires_after


class BreakGlassRule(_Rule):
    """The post-implementation review an admin's direct move into Production opens (``[production.break_glass]``).

    Holders of ``reviewer_role`` (never the admin who broke the glass) complete it within ``review_within``;
    they are reminded every ``reminder_every`` until then, and admins are notified when it is overdue.
    """

    enabled: bool = True
    review_within: Duration = timedelta(days=2)
    reminder_every: Duration = timedelta(hours=12)
    reviewer_role: Literal["engineer", "approver", "admin"] = "approver"


class StagePolicy(_Rule):
    """The checks and sign-off for one kind of promotion; a missing section is not required."""

    tests: TestsRule | None = None
    metrics: MetricsRule | None = None
    signature: SignatureRule | None = None
    leakage: LeakageRule | None = None
    description: DescriptionRule | None = None
    sign_off: SignOffRule | None = None
    break_glass: BreakGlassRule | None = None
    """Production only: the review a break-glass move opens (None or ``enabled = false``: no review)."""

    def break_glass_review(self) -> BreakGlassRule | None:
        """The review rule a break-glass move into this stage follows (None: it opens no review)."""
        return self.break_glass if self.break_glass is not None and self.break_glass.enabled else None

    @property
    def approvers_needed(self) -> int:
        """How many approvals this promotion needs (0 without a sign-off section)."""
        return self.sign_off.needed if self.sign_off is not None else 0

    def required_sign_off(self) -> SignOffRule | None:
        """The sign-off rule when approvals are needed (None: no human sign-off)."""
        return self.sign_off if self.approvers_needed > 0 else None

    def evidence_tags(self) -> list[str]:
        """The candidate tags the checks read (the CI attestation tag)."""
        return [self.tests.attestation_tag] if self.tests is not None and self.tests.mode == "attestation" else []


class PromotionPolicy(_Rule):
    """The whole policy for one registered model (default merged with its override)."""

    schema_version: Literal[1] = 1
    production: StagePolicy
    staging: StagePolicy
    rollback: StagePolicy

    @model_validator(mode="after")
    def _break_glass_in_production_only(self) -> PromotionPolicy:
        for kind in ("staging", "rollback"):
            if getattr(self, kind).break_glass is not None:
                raise ValueError(f"[{kind}.break_glass]: a break-glass review applies to Production only")
        return self

    def for_target(self, target_stage: str, *, rollback: bool = False) -> StagePolicy:
        """The stage policy for a promotion to ``target_stage`` (``rollback`` for a re-promotion)."""
        if rollback:
            return self.rollback
        stage = target_stage.strip().lower()
        if stage == "production":
            return self.production
        if stage == "staging":
            return self.staging
        raise ValueError(f"no promotion policy for target stage {target_stage!r}")
