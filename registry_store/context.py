"""The one explicit context every registry service shares, and the row helpers they build on."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, bindparam
from sqlalchemy import select as select_columns
from sqlmodel import Session, col, select

from registry_store.artifacts import ArtifactStore, SourceFetcher
from registry_store.audit import Actor, append_event
from registry_store.committed_events import CommittedEvent, CommittedObserver
from registry_store.db import Database
from registry_store.errors import NotFoundError
from registry_store.model_access import model_not_found, require_model_permission
from registry_store.tables import ModelVersionRow, RegisteredModelAliasRow, RegisteredModelRow
from registry_store.users import require_role
from registry_store.validation import validate_model_name
from registry_store.views import AnyRow
from registry_store.webhook_outbox import publish_event
from registry_store.webhook_secrets import SecretBox

__all__ = ["MAX_MODEL_RESULTS", "MAX_VERSION_RESULTS", "RegistryContext", "ServiceBase", "model_not_found"]

log = logging.getLogger(__name__)
_MODEL = select(RegisteredModelRow).where(col(RegisteredModelRow.name) == bindparam("name"))
_MODEL_RECORD = select_columns(*RegisteredModelRow.__table__.columns).where(  # type: ignore[attr-defined]
    col(RegisteredModelRow.name) == bindparam("name")
)
_MODEL_FOR_UPDATE = _MODEL.with_for_update()
_VERSION = select(ModelVersionRow).where(
    col(ModelVersionRow.model_id) == bindparam("model_id"), col(ModelVersionRow.version) == bindparam("number")
)
MAX_MODEL_RESULTS = 1000
MAX_VERSION_RESULTS = 200_000


@dataclass(frozen=True)
class RegistryContext:
    """What the registry services share: the database, the clock, the artifact store and the source fetcher.

    ``policy_dir``: where the promotion policies are read (the break-glass review rule); None: the packaged default.
    """

    db: Database
    clock: Callable[[], int]
    artifacts: ArtifactStore
    fetcher: SourceFetcher
    protected_aliases: frozenset[str] = frozenset({"champion"})
    observer: CommittedObserver | None = None
    """Told each audit event once its transaction has committed (metrics); never inside the transaction."""
    policy_dir: Path | None = None
    secrets: SecretBox | None = None
    """Encrypts webhook secrets (None: webhooks cannot hold a secret)."""
    public_url: str = ""
    """The server's address as users reach it, for links in events (``/ui/promotions/<id>``)."""

    @classmethod
    def build(
        cls,
        db: Database,
        *,
        artifacts: ArtifactStore,
        fetcher: SourceFetcher,
        clock: Callable[[], int],
        protected_aliases: Sequence[str] = ("champion",),
        observer: CommittedObserver | None = None,
        policy_dir: Path | None = None,
        secrets: SecretBox | None = None,
        public_url: str = "",
    ) -> RegistryContext:
        """A context; protected alias names are compared case-insensitively."""
        return cls(db, clock, artifacts, fetcher, frozenset(a.lower() for a in protected_aliases), observer,
                   policy_dir, secrets, public_url.rstrip("/"))

    def publish(self, session: Session | Connection, event: str, model_name: str, data: dict[str, Any]) -> int | None:
        """Put webhook event ``event`` in the outbox in the transaction of ``session`` (``webhook_outbox.py``);
        the event's id (None: no subscription wants it)."""
        return publish_event(session, event, model_name, data, self.clock())

    def promotion_url(self, promotion_id: str) -> str:
        """The link to a promotion's page."""
        return f"{self.public_url}/ui/promotions/{promotion_id}"

    def audit(
        self,
        session: Session | Connection,
        actor: Actor,
        action: str,
        model_name: str,
        version: int | None,
        *,
        before: Any = None,
        after: Any = None,
        timestamp: int | None = None,
        status_since_ms: int | None = None,
    ) -> None:
        """Append one audit event in the transaction of ``session``, stamped ``timestamp`` or by the clock.

        The observer hears of it after the commit (``status_since_ms``: see ``CommittedEvent``).
        """
        subject = f"{model_name}/{version}" if version is not None else model_name
        stamp = self.clock() if timestamp is None else timestamp
        if self.observer is not None:
            observer, event = self.observer, CommittedEvent(
                action, model_name, version, stamp, before if isinstance(before, dict) else {},
                after if isinstance(after, dict) else {}, status_since_ms)
            self.db.after_commit(session, lambda: observer(event))
        append_event(
            session,
            actor=actor,
            action=action,
            timestamp=stamp,
            model_name=model_name,
            version=version,
            subject=subject,
            before=before,
            after=after,
        )


class ServiceBase:
    """A registry service over the shared context, with the row helpers every service uses."""

    def __init__(self, context: RegistryContext) -> None:
        self.context = context
        self._db = context.db
        self._clock = context.clock
        self._artifacts = context.artifacts
        self._fetcher = context.fetcher
        self._protected_aliases = context.protected_aliases
        self._audit = context.audit
        self._publish = context.publish

    @staticmethod
    def _model(session: Session, name: object, *, actor: Actor, need: str, lock: bool = False) -> RegisteredModelRow:
        """The model's row, if ``actor`` holds ``need`` on it (``model_access.py``; without READ it is not found)."""
        model_name = validate_model_name(name)
        row = session.exec(_MODEL_FOR_UPDATE if lock else _MODEL, params={"name": model_name}).first()
        if row is None:
            raise model_not_found(model_name)
        require_model_permission(session.connection(), actor, row, need)
        return row

    @staticmethod
    def _model_record(connection: Connection, name: object, *, actor: Actor, need: str) -> AnyRow:
        """A model's columns for reading (no ORM object: cheaper on the hot read paths), as ``_model`` checks."""
        model_name = validate_model_name(name)
        row = connection.execute(_MODEL_RECORD, {"name": model_name}).first()
        if row is None:
            raise model_not_found(model_name)
        require_model_permission(connection, actor, row, need)
        return row

    @staticmethod
    def _version(session: Session, model: RegisteredModelRow, number: int) -> ModelVersionRow:
        row = session.exec(_VERSION, params={"model_id": model.id, "number": number}).first()
        if row is None:
            raise NotFoundError(f"Model Version (name={model.name}, version={number}) not found")
        return row

    @staticmethod
    def _version_number(session: Session, version_id: int) -> int | None:
        return session.exec(select(ModelVersionRow.version).where(col(ModelVersionRow.id) == version_id)).first()

    def _check_protected_removal(
        self, session: Session, actor: Actor, model: RegisteredModelRow, version_id: int | None = None
    ) -> list[str]:
        """Protected aliases a deletion would remove (each needs admin: break-glass)."""
        query = select(RegisteredModelAliasRow.alias).where(col(RegisteredModelAliasRow.model_id) == model.id)
        if version_id is not None:
            query = query.where(col(RegisteredModelAliasRow.version_id) == version_id)
        removed = [alias for alias in session.exec(query).all() if alias.lower() in self._protected_aliases]
        for alias in removed:
            self._check_protected_alias(actor, alias)
        return removed

    def _check_protected_alias(self, actor: Actor, alias: str) -> bool:
        if alias.lower() not in self._protected_aliases:
            return False
        require_role(
            actor,
            "admin",
            f"move the protected alias '{alias}' directly (request a promotion instead; admins may break glass)",
        )
        return True

    def _delete_artifacts(self, locations: Sequence[str]) -> None:
        for location in locations:
            try:
                self._artifacts.delete(location)
            except Exception:  # the rows are gone already; a leftover copy is only garbage
                log.exception("could not delete artifact copy at %s", location)

