"""Model version stages: case-insensitive on input, canonical on output."""

from __future__ import annotations

from policies.identity import ALL_STAGES, ARCHIVED, NONE, PRODUCTION, STAGING
from registry_store.errors import InvalidParameterError

__all__ = ["ALL_STAGES", "ARCHIVED", "NONE", "PRODUCTION", "STAGING", "canonical_stage", "is_break_glass"]

_BY_LOWER = {stage.lower(): stage for stage in ALL_STAGES}


def canonical_stage(stage: object) -> str:
    """Return the canonical spelling of ``stage`` or raise ``InvalidParameterError``."""
    if isinstance(stage, str) and stage.lower() in _BY_LOWER:
        return _BY_LOWER[stage.lower()]
    raise InvalidParameterError(
        f"Invalid Model Version stage: {stage}. Value must be one of {', '.join(ALL_STAGES)}."
    )


def is_break_glass(source: str, target: str) -> bool:
    """A direct move into or out of Production: admins only, recorded as break-glass."""
    return PRODUCTION in (source, target) and source != target
