"""Who authored a training run, and which run tags only Calabi's tracking gateway may write.

MLflow clients set a run's ``mlflow.user`` tag (and its deprecated ``user_id``) to whatever they
like, so separation of duties cannot take them on trust. The gateway stamps the authenticated Calabi
user as the author of every run created through it: ``user_id``, ``mlflow.user`` and ``calabi.author``
(``stamped_run_create``), and refuses later writes of those tags (``reserved_tag_refusal``). Reading a
run's author, ``calabi.author`` wins (verified by Calabi), then what the client claimed, then the
user who registered the version.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict

__all__ = [
    "AUTHOR_TAG",
    "CLIENT_USER_TAG",
    "AuthorSource",
    "RunAuthor",
    "reserved_run_tag",
    "reserved_tag_refusal",
    "run_author",
    "run_author_label",
    "stamped_run_create",
]

AUTHOR_TAG = "calabi.author"
"""The run tag holding the author Calabi authenticated when the run was created through its gateway."""
CLIENT_USER_TAG = "mlflow.user"
"""The run tag the MLflow client sets to the OS user (a claim)."""
_RESERVED_PREFIX = "calabi."
_USER_ID_FIELD = "userid"
"""``user_id`` compared without ``_`` and case (protobuf's JSON parser takes ``user_id`` and ``userId``)."""


class AuthorSource(StrEnum):
    """Where a run's author was read from."""

    CALABI = "calabi"
    """Stamped by Calabi's tracking gateway from the authenticated user: verified."""
    CLIENT = "client"
    """The run's ``mlflow.user`` tag or ``user_id``, as a client sent it straight to the tracking server."""
    REGISTRATION = "registration"
    """No run (or a run naming nobody): the Calabi user who registered the version."""


_LABELS: dict[str, str] = {AuthorSource.CALABI: "verified by Calabi", AuthorSource.CLIENT: "claimed by the client",
           AuthorSource.REGISTRATION: "the registering user"}


def run_author_label(source: str) -> str:
    """How pages and exports describe an author source ("" when none was recorded)."""
    return _LABELS.get(source, "")


class RunAuthor(BaseModel):
    """Who authored a candidate's training run, and how Calabi knows."""

    model_config = ConfigDict(frozen=True)

    name: str
    source: AuthorSource


def reserved_run_tag(key: object) -> bool:
    """Whether only the gateway may write run tag ``key``: ``mlflow.user`` and every ``calabi.*`` tag."""
    if not isinstance(key, str):
        return False
    normalised = key.strip().casefold()
    return normalised == CLIENT_USER_TAG or normalised.startswith(_RESERVED_PREFIX)


def stamped_run_create(body: Mapping[str, Any], author: str) -> dict[str, Any]:
    """A ``runs/create`` request body with ``author`` as the run's user, whatever the client claimed.

    ``user_id`` (in any spelling) and reserved tags the client sent are replaced by ``user_id``,
    ``mlflow.user`` and ``calabi.author`` set to ``author``.
    """
    stamped = {key: value for key, value in body.items() if key.replace("_", "").casefold() != _USER_ID_FIELD}
    tags = body.get("tags")
    kept = [tag for tag in tags if not (isinstance(tag, Mapping) and reserved_run_tag(tag.get("key")))] \
        if isinstance(tags, list) else []
    stamped["user_id"] = author
    stamped["tags"] = [*kept, {"key": CLIENT_USER_TAG, "value": author}, {"key": AUTHOR_TAG, "value": author}]
    return stamped


def reserved_tag_refusal(operation: str, body: Mapping[str, Any]) -> str | None:
    """Why a run write (``set-tag``, ``delete-tag``, ``log-batch``) is refused: it writes a reserved tag.

    None for any other operation or when no reserved tag is written.
    """
    if operation in ("set-tag", "delete-tag"):
        keys = [body.get("key")]
    elif operation == "log-batch":
        tags = body.get("tags")
        keys = [tag.get("key") for tag in tags if isinstance(tag, Mapping)] if isinstance(tags, list) else []
    else:
        return None
    reserved = sorted({key for key in keys if isinstance(key, str) and reserved_run_tag(key)})
    if not reserved:
        return None
    return (f"The run tag(s) {', '.join(repr(key) for key in reserved)} may not be set or deleted: Calabi records "
            "a run's author (the signed-in user who created it) and keeps 'mlflow.user' and 'calabi.*' tags "
            "for itself.")


def run_author(tags: Mapping[str, str], user_id: str, registered_by: str) -> RunAuthor:
    """A run's author: ``calabi.author`` (verified), else ``mlflow.user`` or ``user_id`` (claimed by the
    client), else ``registered_by``, the Calabi user who registered the version (no run, or it names nobody)."""
    if verified := tags.get(AUTHOR_TAG, "").strip():
        return RunAuthor(name=verified, source=AuthorSource.CALABI)
    if claimed := tags.get(CLIENT_USER_TAG, "").strip() or user_id.strip():
        return RunAuthor(name=claimed, source=AuthorSource.CLIENT)
    return RunAuthor(name=registered_by, source=AuthorSource.REGISTRATION)
