"""The scale benchmark's seeding plan: clones of one real template model, and their audit events re-chained.

The template model is registered through the API (so its rows and audit events are exactly what the
services write); every clone is a copy of its rows with the model name and the artifact ids replaced,
and a copy of its audit events with the same replacements, appended to the chain after the head (the
hash computed by ``registry_store.audit.HASH_RULE``, so ``audit verify`` checks the seeded chain too).
Pure functions only: ``bench.scale_seed`` runs them against the database.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

__all__ = [
    "CHAINED",
    "TEMPLATE",
    "AuditEvent",
    "chain_hash",
    "clone_events",
    "clone_name",
    "clone_plan",
    "Clone",
]

CHAINED = (
    "seq", "timestamp", "actor", "action", "model_name", "version", "subject", "before", "after", "request_id",
    "prev_hash",
)
"""The fields an audit event's hash covers, in hashing order (``registry_store.audit.HASH_RULE``)."""


def clone_name(index: int) -> str:
    """The name of model ``index``: ``scale-0000`` (the template) … ``scale-0999``."""
    return f"scale-{index:04d}"


TEMPLATE = clone_name(0)


def chain_hash(fields: Sequence[Any]) -> str:
    """sha256 hex of the compact, key-sorted JSON array of ``fields`` (the documented ``HASH_RULE``)."""
    return hashlib.sha256(json.dumps(list(fields), sort_keys=True, separators=(",", ":"), default=str).encode()
                          ).hexdigest()


@dataclass(frozen=True)
class AuditEvent:
    """One audit row's chained fields and its hash (``before``/``after`` as stored: JSON text)."""

    seq: int
    timestamp: int
    actor: str
    action: str
    model_name: str
    version: int | None
    subject: str
    before: str
    after: str
    request_id: str
    prev_hash: str
    hash: str = ""

    def chained(self) -> list[Any]:
        """The values the hash covers, in order."""
        return [getattr(self, name) for name in CHAINED]


@dataclass(frozen=True)
class Clone:
    """One clone of the template: its name and a fresh artifact id for each template artifact id."""

    name: str
    artifact_ids: Mapping[str, str]

    def rename(self, text: str) -> str:
        """``text`` with the template's name and artifact ids replaced by this clone's."""
        out = text.replace(TEMPLATE, self.name)
        for old, new in self.artifact_ids.items():
            out = out.replace(old, new)
        return out


def clone_plan(count: int, template_artifact_ids: Sequence[str],
               new_id: Callable[[], str] = lambda: uuid.uuid4().hex) -> Iterator[Clone]:
    """Clones 1 … ``count - 1`` of the template (the template itself is model 0), each with fresh artifact ids."""
    for index in range(1, count):
        yield Clone(clone_name(index), {old: new_id() for old in template_artifact_ids})


def clone_events(template: Sequence[AuditEvent], clones: Sequence[Clone], *, head_seq: int, head_hash: str,
                 ) -> Iterator[AuditEvent]:
    """The template's events copied for each clone in turn, appended after ``(head_seq, head_hash)``.

    Texts get the clone's name and artifact ids; ``seq``, ``prev_hash`` and ``hash`` continue the chain.
    """
    seq, prev = head_seq, head_hash
    for clone in clones:
        for event in template:
            seq += 1
            copied = replace(
                event, seq=seq, model_name=clone.rename(event.model_name), subject=clone.rename(event.subject),
                before=clone.rename(event.before), after=clone.rename(event.after), prev_hash=prev, hash="",
            )
            prev = chain_hash(copied.chained())
            yield replace(copied, hash=prev)
