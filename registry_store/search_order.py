"""MLflow's ``order_by`` for searches: ``"<key> [ASC|DESC]"`` entries, then the tie-breakers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from registry_store.errors import InvalidParameterError

__all__ = ["MODEL_ORDER", "VERSION_ORDER", "OrderKey", "OrderRules", "parse_order_by"]


@dataclass(frozen=True)
class OrderKey:
    """One sort key: a canonical field name and its direction."""

    field: str
    ascending: bool


@dataclass(frozen=True)
class OrderRules:
    """Accepted ``order_by`` keys (key -> canonical field), tie-breakers and the default order."""

    keys: Mapping[str, str]
    tie_breakers: tuple[OrderKey, ...]
    default: tuple[OrderKey, ...]


MODEL_ORDER = OrderRules(
    keys={"name": "name", "timestamp": "last_updated_timestamp", "last_updated_timestamp": "last_updated_timestamp"},
    tie_breakers=(OrderKey("name", True),),
    default=(OrderKey("name", True),),
)
VERSION_ORDER = OrderRules(
    keys={k: k for k in ("name", "version_number", "creation_timestamp", "last_updated_timestamp")},
    tie_breakers=(OrderKey("name", True), OrderKey("version_number", False)),
    default=(OrderKey("last_updated_timestamp", False),),
)


def parse_order_by(order_by: Sequence[str] | None, rules: OrderRules) -> list[OrderKey]:
    """Parse ``"<key> [ASC|DESC]"`` entries, then append the tie-breakers not already listed."""
    keys: list[OrderKey] = []
    for entry in order_by or ():
        if not isinstance(entry, str):
            raise InvalidParameterError(f"Invalid order_by clause {entry!r}: expected a string.")
        words = entry.split()
        if not words:
            continue
        if len(words) > 2 or (len(words) == 2 and words[1].upper() not in ("ASC", "DESC")):
            raise InvalidParameterError(
                f"Invalid order_by clause '{entry}'. Expected '<key>', '<key> ASC' or '<key> DESC'."
            )
        field = rules.keys.get(words[0])
        if field is None:
            valid = ", ".join(f"'{k}'" for k in sorted(rules.keys))
            raise InvalidParameterError(f"Invalid order by key '{words[0]}' specified. Valid keys are {valid}.")
        if any(k.field == field for k in keys):
            raise InvalidParameterError(f"`order_by` contains duplicate fields: {field}")
        keys.append(OrderKey(field, len(words) == 1 or words[1].upper() == "ASC"))
    if not keys:
        keys = list(rules.default)
    keys.extend(t for t in rules.tie_breakers if all(k.field != t.field for k in keys))
    return keys
