"""What a committed mutation tells an observer (metrics): the audit event it wrote, after its transaction commits."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = ["CommittedEvent", "CommittedObserver", "status_since_ms"]


@dataclass(frozen=True)
class CommittedEvent:
    """One audit event of a committed transaction; ``status_since_ms`` is when a promotion whose status this
    event changes entered its previous status (epoch ms), when known."""

    action: str
    model_name: str
    version: int | None
    timestamp: int
    before: Mapping[str, Any] = field(default_factory=dict)
    after: Mapping[str, Any] = field(default_factory=dict)
    status_since_ms: int | None = None


CommittedObserver = Callable[[CommittedEvent], None]


def status_since_ms(history: str, created_ms: int) -> int:
    """When the status a promotion is in was entered: the last change of its history (JSON), else its creation."""
    for change in reversed(json.loads(history)):
        at = change.get("at") if isinstance(change, dict) else None
        if isinstance(at, str):
            try:
                return int(datetime.fromisoformat(at).timestamp() * 1000)
            except ValueError:
                continue
    return created_ms
