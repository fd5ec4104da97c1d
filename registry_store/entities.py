"""What the service returns: immutable views, independent of the tables."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict

__all__ = [
    "AliasRef",
    "AuditEvent",
    "AuditVerification",
    "ModelVersion",
    "Page",
    "RegisteredModel",
    "User",
]

T = TypeVar("T")


class _View(BaseModel):
    model_config = ConfigDict(frozen=True)


class AliasRef(_View):
    """An alias and the version number it names."""

    alias: str
    version: int


class ModelVersion(_View):
    """One version of a registered model."""

    name: str
    version: int
    current_stage: str
    description: str
    source: str
    run_id: str
    run_link: str
    storage_location: str
    digest: str
    signature: str
    evidence: dict[str, Any]
    status: str
    status_message: str
    user_id: str
    creation_timestamp: int
    last_updated_timestamp: int
    tags: dict[str, str]
    aliases: list[str]


class RegisteredModel(_View):
    """A registered model with its tags, aliases and latest version per stage."""

    name: str
    description: str
    creation_timestamp: int
    last_updated_timestamp: int
    tags: dict[str, str]
    aliases: list[AliasRef]
    latest_versions: list[ModelVersion]


class Page(_View, Generic[T]):
    """One page of search results; ``next_page_token`` only when another page exists."""

    items: Sequence[T]
    next_page_token: str | None = None


class User(_View):
    """A user and the roles granted to it."""

    name: str
    roles: list[str]
    creation_timestamp: int


class AuditEvent(_View):
    """One entry of the hash-chained audit log."""

    seq: int
    timestamp: int
    actor: str
    action: str
    model_name: str
    version: int | None
    subject: str
    before: Any
    after: Any
    request_id: str
    prev_hash: str
    hash: str


class AuditVerification(_View):
    """Result of checking the audit hash chain."""

    ok: bool
    events_checked: int
    first_bad_seq: int | None = None
    problem: str = ""
