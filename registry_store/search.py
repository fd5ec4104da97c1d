"""Search: MLflow filter/order_by strings to SQLAlchemy conditions, page tokens, ``max_results``.

The grammar lives in :mod:`registry_store.search_filter`; this module maps parsed clauses to
columns of the tables. Every value is a bound parameter. ``LIKE`` is case-sensitive (the engine
sets ``PRAGMA case_sensitive_like=ON`` on SQLite; PostgreSQL's LIKE already is) and ``ILIKE``
renders as ``ILIKE`` on PostgreSQL and ``lower(x) LIKE lower(y)`` elsewhere. Both use ``\\`` as
the escape character on every backend, so ``\\%`` and ``\\_`` match a literal ``%`` and ``_``.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, UnaryExpression, exists, not_, select
from sqlalchemy.orm import Mapped
from sqlmodel import col

from registry_store.errors import InvalidParameterError
from registry_store.search_filter import (
    MODEL_FILTER,
    PROMPT_TAG,
    VERSION_FILTER,
    Comparison,
    parse_filter,
)
from registry_store.search_order import MODEL_ORDER, VERSION_ORDER, OrderKey, parse_order_by
from registry_store.tables import ModelVersionRow, ModelVersionTagRow, RegisteredModelRow, RegisteredModelTagRow

__all__ = [
    "SearchSpec",
    "decode_page_token",
    "encode_page_token",
    "next_page_token",
    "model_version_search",
    "registered_model_search",
    "validate_max_results",
]

MAX_OFFSET = 2**53 - 1
_ESCAPE = "\\"

Column = Mapped[Any]


@dataclass(frozen=True)
class SearchSpec:
    """WHERE conditions (to AND together) and ORDER BY clauses for one search."""

    conditions: list[ColumnElement[bool]] = field(default_factory=list)
    order: list[UnaryExpression[Any]] = field(default_factory=list)


def registered_model_search(filter_string: str | None, order_by: Sequence[str] | None) -> SearchSpec:
    """Conditions and order for ``select(RegisteredModelRow)``."""
    clauses = parse_filter(filter_string, MODEL_FILTER)
    keys = parse_order_by(order_by, MODEL_ORDER)
    attrs: dict[str, Column] = {"name": col(RegisteredModelRow.name)}
    sort: dict[str, Column] = {
        "name": col(RegisteredModelRow.name),
        "last_updated_timestamp": col(RegisteredModelRow.last_updated_timestamp),
    }
    tag = _TagTable(
        col(RegisteredModelTagRow.model_id),
        col(RegisteredModelTagRow.key),
        col(RegisteredModelTagRow.value),
        col(RegisteredModelRow.id),
    )
    return SearchSpec([_condition(c, attrs, tag) for c in clauses], _order(keys, sort))


def model_version_search(filter_string: str | None, order_by: Sequence[str] | None) -> SearchSpec:
    """Conditions and order for ``select(ModelVersionRow, RegisteredModelRow.name).join(RegisteredModelRow, …)``."""
    clauses = parse_filter(filter_string, VERSION_FILTER)
    keys = parse_order_by(order_by, VERSION_ORDER)
    attrs: dict[str, Column] = {
        "name": col(RegisteredModelRow.name),
        "version_number": col(ModelVersionRow.version),
        "run_id": col(ModelVersionRow.run_id),
        "source_path": col(ModelVersionRow.source),
    }
    sort: dict[str, Column] = {
        "name": col(RegisteredModelRow.name),
        "version_number": col(ModelVersionRow.version),
        "creation_timestamp": col(ModelVersionRow.creation_timestamp),
        "last_updated_timestamp": col(ModelVersionRow.last_updated_timestamp),
    }
    tag = _TagTable(
        col(ModelVersionTagRow.version_id),
        col(ModelVersionTagRow.key),
        col(ModelVersionTagRow.value),
        col(ModelVersionRow.id),
    )
    return SearchSpec([_condition(c, attrs, tag) for c in clauses], _order(keys, sort))


@dataclass(frozen=True)
class _TagTable:
    owner_id: Column  # the tag row's foreign key
    key: Column
    value: Column
    parent_id: Column  # the searched row's primary key (correlated)


def _compare(column: Column, comparator: str, value: object) -> ColumnElement[bool]:
    if comparator == "=":
        return column == value
    if comparator == "!=":
        return column != value
    if comparator == "<":
        return column < value
    if comparator == "<=":
        return column <= value
    if comparator == ">":
        return column > value
    if comparator == ">=":
        return column >= value
    if comparator == "LIKE":
        return column.like(value, escape=_ESCAPE)
    if comparator == "ILIKE":
        return column.ilike(value, escape=_ESCAPE)
    assert isinstance(value, tuple)
    if comparator == "IN":
        return column.in_(value)
    if comparator == "NOT IN":
        return column.not_in(value)
    raise AssertionError(f"unhandled comparator {comparator}")  # pragma: no cover


def _condition(clause: Comparison, attrs: Mapping[str, Column], tag: _TagTable) -> ColumnElement[bool]:
    if clause.kind == "attribute":
        return _compare(attrs[clause.key], clause.comparator, clause.value)
    owned = [tag.owner_id == tag.parent_id, tag.key == clause.key]
    if clause.key == PROMPT_TAG and (clause.comparator, clause.value) in (("!=", "true"), ("=", "false")):
        # The client's own prompt guard: "not a prompt" also matches rows without the tag.
        return not_(exists(select(tag.owner_id).where(*owned, tag.value == "true")))
    return exists(select(tag.owner_id).where(*owned, _compare(tag.value, clause.comparator, clause.value)))


def _order(keys: Sequence[OrderKey], columns: Mapping[str, Column]) -> list[UnaryExpression[Any]]:
    return [columns[k.field].asc() if k.ascending else columns[k.field].desc() for k in keys]


# --------------------------------------------------------------------------- paging


def next_page_token(fetched: int, *, offset: int, limit: int) -> str | None:
    """The token of the next page when ``limit + 1`` rows were asked for and more than ``limit`` came."""
    return encode_page_token(offset + limit) if fetched > limit else None


def encode_page_token(offset: int) -> str:
    """An opaque token for the page starting at ``offset``: url-safe base64 of ``{"offset": n}``."""
    return base64.urlsafe_b64encode(json.dumps({"offset": offset}).encode()).decode("ascii")


def decode_page_token(token: str | None) -> int:
    """The offset a token encodes; ``None`` or ``""`` means the first page."""
    if token is None or token == "":
        return 0
    if not isinstance(token, str):
        raise InvalidParameterError("Invalid page token, expected a string.")
    try:
        raw = token.strip().encode("ascii")
        raw += b"=" * (-len(raw) % 4)
        decoded = base64.b64decode(raw.replace(b"-", b"+").replace(b"_", b"/"), validate=True)
    except (UnicodeError, binascii.Error, ValueError):
        raise InvalidParameterError("Invalid page token, could not base64-decode.") from None
    try:
        payload = json.loads(decoded)
    except (UnicodeError, ValueError, RecursionError):
        raise InvalidParameterError("Invalid page token, could not parse its JSON content.") from None
    offset = payload.get("offset") if isinstance(payload, dict) else None
    if type(offset) is not int or not 0 <= offset <= MAX_OFFSET:
        raise InvalidParameterError("Invalid page token, its offset must be a non-negative integer.")
    return offset


_DECIMAL = re.compile(r"\s*[+-]?[0-9]+\s*")


def validate_max_results(value: object, *, limit: int) -> int:
    """``value`` as an int in ``1..limit``; numeric strings (from query strings) are accepted."""
    number: int | None = None
    if type(value) is int:
        number = value
    elif isinstance(value, str) and _DECIMAL.fullmatch(value) and len(value.strip()) <= 20:
        number = int(value)
    if number is None or not 1 <= number <= limit:
        raise InvalidParameterError(
            f"Invalid value {json.dumps(value) if isinstance(value, str | int) else repr(value)} "
            f"for parameter 'max_results' supplied. It must be an integer between 1 and {limit}."
        )
    return number
