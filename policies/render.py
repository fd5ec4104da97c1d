"""jinja2 rendering: the promoted version's description and plain-text notifications.

Templates live in ``policies/templates`` (``description.j2``, ``notify_<kind>.j2``,
``_macros.j2``). Undefined variables are errors; autoescaping is on for ``.html``/
``.xml`` templates only (the ones here are plain text). A notification's first line is
its subject: ``[Calabi] <model> v<version> → <stage>: <what happened>``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Any, Literal, get_args

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from policies._base import Frozen
from policies.results import CheckResult

__all__ = [
    "MAX_DESCRIPTION",
    "NotificationContext",
    "NotificationKind",
    "render_description",
    "render_notification",
]

MAX_DESCRIPTION = 5000
NotificationKind = Literal[
    "requested", "awaiting", "reminder", "promoted", "rejected", "expired", "checks_failed", "check_error", "cancelled",
    "failed", "evidence_changed",
]
NOTIFICATION_KINDS: tuple[str, ...] = get_args(NotificationKind)
_MAX_LISTED_APPROVERS = 10
_MAX_NAME = 100


def _num(value: float | None) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return f"{value:.6g}"


def _signed(value: float) -> str:
    return f"{value:+.6g}"


def _when(value: datetime) -> str:
    moment = value.astimezone(UTC) if value.tzinfo is not None else value
    return moment.strftime("%Y-%m-%d %H:%M UTC")


_ENV = Environment(
    loader=PackageLoader("policies", "templates"),
    autoescape=select_autoescape(enabled_extensions=("html", "htm", "xml"), default_for_string=False, default=False),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=False,
)
_ENV.filters.update(num=_num, signed=_signed, when=_when)


def _clip(text: str, limit: int = _MAX_NAME) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def render_description(
    existing: str,
    *,
    approvers: Sequence[str],
    validated_on: date,
    promotion_id: str,
    primary_metric: str | None = None,
    candidate_value: float | None = None,
    incumbent_value: float | None = None,
    incumbent_version: int | None = None,
) -> str:
    """``existing`` followed by the sign-off line, at most ``MAX_DESCRIPTION`` characters.

    The old text is truncated (ending in "…"), never the sign-off line. If ``existing``
    already ends with the same sign-off line it is returned unchanged (idempotent apply).
    """
    names = [_clip(name) for name in approvers[:_MAX_LISTED_APPROVERS]]
    if len(approvers) > _MAX_LISTED_APPROVERS:
        names.append(f"{len(approvers) - _MAX_LISTED_APPROVERS} more")
    template = _ENV.get_template("description.j2")
    values: dict[str, Any] = {
        "approvers": names,
        "validated_on": validated_on,
        "promotion_id": _clip(promotion_id, 300),
        "primary_metric": _clip(primary_metric) if primary_metric else None,
        "candidate_value": candidate_value,
        "incumbent_value": incumbent_value,
        "incumbent_version": incumbent_version,
    }
    line = template.render(existing="", **values).strip()
    old = existing.rstrip()
    if old.endswith(line) and len(old) <= MAX_DESCRIPTION:
        return old
    budget = MAX_DESCRIPTION - len(line) - 2  # the blank line between old text and sign-off line
    if len(old) > budget:
        old = old[: max(budget - 1, 0)].rstrip() + "…" if budget > 1 else ""
    return template.render(existing=old, **values).strip()


class NotificationContext(Frozen):
    """What a notification may mention; unused fields keep their defaults."""

    model: str
    version: int
    target_stage: str
    promotion_id: str
    requester: str
    justification: str = ""
    role: str = "approver"
    exclude_requester: bool = True
    approvals_needed: int = 0
    approved_by: list[str] = []
    deadline: datetime | None = None
    actor: str = ""
    comment: str = ""
    results: list[CheckResult] = []
    incumbent_version: int | None = None

    @property
    def remaining(self) -> int:
        """Approvals still missing."""
        return max(self.approvals_needed - len(self.approved_by), 0)

    @property
    def failed_count(self) -> int:
        """How many check results failed."""
        return sum(not result.passed for result in self.results)


def render_notification(kind: NotificationKind, context: NotificationContext | Mapping[str, Any]) -> str:
    """Render ``notify_<kind>.j2``; a mapping context is validated as ``NotificationContext``."""
    if kind not in NOTIFICATION_KINDS:
        raise ValueError(f"unknown notification kind {kind!r}; expected one of {', '.join(NOTIFICATION_KINDS)}")
    ctx = context if isinstance(context, NotificationContext) else NotificationContext.model_validate(dict(context))
    text = _ENV.get_template(f"notify_{kind}.j2").render(c=ctx)
    return "\n".join(line.rstrip() for line in text.strip().splitlines()) + "\n"
