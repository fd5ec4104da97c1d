"""How the workflow words a failure: a failed checklist, and an activity's error (its message and type)."""

from __future__ import annotations

from temporalio.exceptions import ActivityError, ApplicationError

from policies.results import Checklist

__all__ = ["activity_cause", "activity_error_type", "failed_checks"]


def failed_checks(checklist: Checklist | None) -> str:
    """One line naming each failed check and its reasons."""
    if checklist is None:
        return "checks failed"
    failed = [f"{r.name}: {'; '.join(r.reasons)}" for r in checklist.results if not r.passed]
    return " | ".join(failed) or "checks failed"


def activity_cause(exc: ActivityError) -> str:
    """The domain message of an activity's failure (else its text)."""
    cause = exc.cause
    return cause.message if isinstance(cause, ApplicationError) else str(cause or exc)


def activity_error_type(exc: ActivityError) -> str | None:
    """The error code an activity failed with (``ApplicationError.type``), if any."""
    cause = exc.cause
    return cause.type if isinstance(cause, ApplicationError) else None
