"""Durations in policy files: compact strings such as ``"7d"``, ``"24h"``, ``"1d12h"``, ``"30m"``.

Grammar: one or more ``<digits><unit>`` parts in the order ``w d h m s`` (each unit at most
once), no spaces, e.g. ``"2w"``, ``"1d12h"``, ``"90m"``. Python callers may also pass a
``timedelta``. Serialised back to the same compact form (``timedelta(hours=36)`` → ``"1d12h"``).
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated

from pydantic import BeforeValidator, PlainSerializer

__all__ = ["Duration", "format_duration", "parse_duration"]

_PART = re.compile(r"^(?:(\d{1,6})w)?(?:(\d{1,6})d)?(?:(\d{1,6})h)?(?:(\d{1,8})m)?(?:(\d{1,9})s)?$")
_UNITS = (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60), ("s", 1))
MIN_DURATION = timedelta(minutes=1)
MAX_DURATION = timedelta(days=3650)


def parse_duration(value: object) -> timedelta:
    """Parse a compact duration string (or pass a ``timedelta`` through) and bound it to 1m..3650d."""
    if isinstance(value, timedelta):
        result = value
    elif isinstance(value, str):
        match = _PART.match(value.strip())
        if not value.strip() or match is None:
            raise ValueError(f"invalid duration {value!r}: use e.g. '7d', '24h', '1d12h', '30m' (units w, d, h, m, s)")
        seconds = sum(int(part) * size for part, (_, size) in zip(match.groups(), _UNITS, strict=True) if part)
        result = timedelta(seconds=seconds)
    else:
        raise ValueError("a duration must be a string such as '7d', '24h' or '30m'")
    if not MIN_DURATION <= result <= MAX_DURATION:
        raise ValueError(f"duration must be between 1m and 3650d, got {format_duration(result)}")
    return result


def format_duration(value: timedelta) -> str:
    """Render ``value`` in the compact form (whole seconds), e.g. ``"1d12h"``; ``"0s"`` for zero."""
    remaining = int(value.total_seconds())
    parts: list[str] = []
    for unit, size in _UNITS[1:]:  # weeks are accepted on input but days read better
        count, remaining = divmod(remaining, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"


Duration = Annotated[timedelta, BeforeValidator(parse_duration), PlainSerializer(format_duration, return_type=str)]
