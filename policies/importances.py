"""Feature importances for the leakage check, from model attributes or a recorded file.

Pure helpers for the evidence activity: ``from_model_values`` turns a fitted model's
``feature_importances_`` (1-D) or ``coef_`` (1-D, or 2-D per class: mean absolute value
per feature) into ``{feature: importance}``; ``parse_importance_file`` reads a recorded
``.json`` (``{"feature": value}`` or ``[{"feature": ..., "importance": ...}]``) or ``.csv``
(header with ``feature``/``name`` and ``importance``/``value`` columns). Both raise
``ValueError`` with a clear message on malformed input.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence

__all__ = ["from_model_values", "parse_importance_file"]

_NAME_KEYS = ("feature", "name")
_VALUE_KEYS = ("importance", "value")


def _number(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"{where}: importance must be a number")
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{where}: importance {value!r} is not a number") from None
    if not math.isfinite(number):
        raise ValueError(f"{where}: importance {value!r} is not finite")
    return number


def from_model_values(names: Sequence[str], values: Sequence[float] | Sequence[Sequence[float]]) -> dict[str, float]:
    """Map feature names to importances from ``feature_importances_`` or ``coef_`` values."""
    rows: list[Sequence[float]]
    if values and isinstance(values[0], Sequence):
        rows = [row for row in values if isinstance(row, Sequence)]
    else:
        rows = [values]  # type: ignore[list-item]
    for index, row in enumerate(rows):
        if len(row) != len(names):
            raise ValueError(f"row {index} has {len(row)} values for {len(names)} feature names")
    if len(rows) == 1:
        return {name: _number(v, name) for name, v in zip(names, rows[0], strict=True)}
    return {name: sum(abs(_number(row[i], name)) for row in rows) / len(rows) for i, name in enumerate(names)}


def parse_importance_file(text: str, *, filename: str) -> dict[str, float]:
    """Parse a recorded importance file by extension (``.json`` or ``.csv``)."""
    lower = filename.lower()
    if lower.endswith(".json"):
        return _from_json(text, filename)
    if lower.endswith(".csv"):
        return _from_rows(list(csv.DictReader(io.StringIO(text))), filename)
    raise ValueError(f"{filename}: importance files must be .json or .csv")


def _from_json(text: str, filename: str) -> dict[str, float]:
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{filename}: not valid JSON: {exc}") from None
    if isinstance(document, dict):
        return {str(name): _number(value, f"{filename}: {name}") for name, value in document.items()}
    if isinstance(document, list) and all(isinstance(row, dict) for row in document):
        return _from_rows(document, filename)
    raise ValueError(f"{filename}: expected an object of feature: importance or a list of rows")


def _from_rows(rows: list[dict[str, object]], filename: str) -> dict[str, float]:
    result: dict[str, float] = {}
    for index, row in enumerate(rows):
        name = next((row[k] for k in _NAME_KEYS if k in row), None)
        value = next((row[k] for k in _VALUE_KEYS if k in row), None)
        if not isinstance(name, str) or not name or value is None:
            raise ValueError(f"{filename}: row {index + 1} needs a 'feature' and an 'importance'")
        result[name] = _number(value, f"{filename}: {name}")
    return result
