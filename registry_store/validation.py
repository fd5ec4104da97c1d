"""Input validation shared by every entry point (MLflow's limits, stated once)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from registry_store.errors import InvalidParameterError

__all__ = [
    "MAX_DESCRIPTION",
    "parse_instant",
    "parse_version",
    "validate_run_id",
    "validate_alias",
    "validate_description",
    "validate_model_name",
    "validate_reason",
    "validate_source",
    "validate_tag",
]

MAX_NAME = 256
MAX_DESCRIPTION = 5000
MAX_SOURCE = 500
MAX_TAG_KEY = 250
MAX_TAG_VALUE = 5000
MAX_ALIAS = 255
MAX_RUN_ID = 64
MAX_VERSION = 2**31 - 1
_TAG_KEY = re.compile(r"^[/\w.\- :]+$")
_ALIAS = re.compile(r"^[\w\-]+$")
_RESERVED_ALIAS = re.compile(r"^(latest|v\d+)$", re.IGNORECASE)
_EPOCH_MS = re.compile(r"^-?\d{1,16}$")


def _require_str(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise InvalidParameterError(f"Parameter '{field}' must be a string, got {type(value).__name__}.")
    return value


def validate_model_name(name: object) -> str:
    """A non-empty name of at most 256 characters without ``/``, ``:`` or control characters."""
    value = _require_str(name, "name")
    if not value.strip():
        raise InvalidParameterError("Missing value for required parameter 'name'.")
    if len(value) > MAX_NAME:
        raise InvalidParameterError(f"Model name exceeds the maximum length of {MAX_NAME} characters.")
    if "/" in value or ":" in value or any(ord(ch) < 32 for ch in value) or value in {".", ".."}:
        raise InvalidParameterError(
            f"Invalid model name {value!r}: names must not contain '/', ':' or control characters."
        )
    return value


def parse_version(version: object) -> int:
    """Parse a version number sent as an int or a string of digits."""
    if isinstance(version, bool):
        raise InvalidParameterError(f"Parameter 'version' must be an integer, got '{version}'.")
    if isinstance(version, int):
        number = version
    elif isinstance(version, str) and version.strip().isdigit() and len(version) < 12:
        number = int(version)
    else:
        raise InvalidParameterError(f"Parameter 'version' must be an integer, got '{version}'.")
    if not 1 <= number <= MAX_VERSION:
        raise InvalidParameterError(f"Parameter 'version' must be an integer from 1 to {MAX_VERSION}, got '{version}'.")
    return number


def validate_description(description: object) -> str:
    """A description of at most 5000 characters (None means empty)."""
    if description is None:
        return ""
    value = _require_str(description, "description")
    if len(value) > MAX_DESCRIPTION:
        raise InvalidParameterError(
            f"Description exceeds the maximum length of {MAX_DESCRIPTION} characters."
        )
    return value


def validate_reason(reason: object) -> str:
    """Why an admin broke glass: at most 5000 characters, trimmed (None means none given)."""
    if reason is None:
        return ""
    value = _require_str(reason, "reason").strip()
    if len(value) > MAX_DESCRIPTION:
        raise InvalidParameterError(f"Reason exceeds the maximum length of {MAX_DESCRIPTION} characters.")
    return value


def validate_tag(key: object, value: object) -> tuple[str, str]:
    """A tag key of MLflow's allowed characters and a value of bounded size."""
    tag_key = _require_str(key, "key")
    if not tag_key or len(tag_key) > MAX_TAG_KEY or not _TAG_KEY.match(tag_key):
        raise InvalidParameterError(
            f"Invalid tag key {tag_key[:300]!r}: 1-{MAX_TAG_KEY} characters of letters, digits, "
            "'_', '-', '.', ' ', ':' or '/'."
        )
    if value is None:
        raise InvalidParameterError(f"Missing value for tag '{tag_key}'.")
    tag_value = value if isinstance(value, str) else str(value)
    if len(tag_value) > MAX_TAG_VALUE:
        raise InvalidParameterError(
            f"Tag value for '{tag_key}' exceeds the maximum length of {MAX_TAG_VALUE} characters."
        )
    return tag_key, tag_value


def validate_alias(alias: object) -> str:
    """An alias of word characters and dashes that is not reserved (``latest``, ``v<digits>``)."""
    value = _require_str(alias, "alias")
    if not value or len(value) > MAX_ALIAS or not _ALIAS.match(value):
        raise InvalidParameterError(
            f"Invalid alias name {value[:300]!r}: 1-{MAX_ALIAS} letters, digits, '_' or '-'."
        )
    if _RESERVED_ALIAS.match(value):
        raise InvalidParameterError(
            f"Invalid alias name {value!r}: 'latest' and 'v<number>' are reserved."
        )
    return value


def validate_source(source: object) -> str:
    """A non-empty artifact source URI of at most 500 characters."""
    value = _require_str(source, "source")
    if not value.strip():
        raise InvalidParameterError("Missing value for required parameter 'source'.")
    if len(value) > MAX_SOURCE or "\x00" in value:
        raise InvalidParameterError(f"Invalid source: at most {MAX_SOURCE} characters, no NUL bytes.")
    return value


def validate_run_id(run_id: object, field: str = "run_id") -> str:
    """An optional run (or logged-model) id of at most 64 characters."""
    if run_id is None:
        return ""
    value = _require_str(run_id, field)
    if len(value) > MAX_RUN_ID:
        raise InvalidParameterError(f"Parameter '{field}' exceeds {MAX_RUN_ID} characters.")
    return value


def parse_instant(value: object, field: str = "at") -> int:
    """An instant as epoch milliseconds (MLflow's timestamps) or ISO-8601 (naive means UTC), in milliseconds."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    text = _require_str(value, field).strip()
    if _EPOCH_MS.match(text):
        return int(text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidParameterError(
            f"Invalid value {text[:80]!r} for parameter '{field}': expected epoch milliseconds or ISO-8601 "
            "(e.g. 2025-06-30T12:00:00Z)."
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)
