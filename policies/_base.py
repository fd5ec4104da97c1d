"""Shared pydantic base: frozen, no unknown fields."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Frozen(BaseModel):
    """Immutable value object that refuses unknown fields.

    Non-finite floats (an MLflow metric may be NaN) serialise to JSON as ``NaN``/``Infinity``
    rather than ``null``, so evidence and results survive a JSON round trip (Temporal payloads).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", ser_json_inf_nan="constants")
