"""The composition root: builds engine, stores and services from settings, for every entry point.

``build_services`` has no side effects (no directory, schema or user is created); ``prepare``
readies a data dir once before serving: it creates the directories, migrates the schema,
ensures the first admin and the webhooks ``CALABI_WEBHOOK_URLS`` stands for
(``registry_store/system_webhooks.py``) and sweeps what killed registrations left in the artifact store
(``registry_store/orphan_sweep.py``; ``calabi serve`` repeats the sweep periodically).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import Runtime
from temporalio.service import TLSConfig

from calabi.engine import PromotionService
from calabi.metrics import observe_committed
from calabi.settings import Settings
from calabi.tracing import temporal_interceptors
from registry_store.artifacts import ArtifactStore, LocalArtifactStore, SourceFetcher, make_artifact_store
from registry_store.artifacts.tracking_client import TrackingClient
from registry_store.artifacts.tracking_sources import TrackingSourceResolver
from registry_store.audit_anchor import ANCHOR_FILE, AuditAnchor
from registry_store.context import RegistryContext
from registry_store.db import Database, make_engine, upgrade_database
from registry_store.errors import RegistryError
from registry_store.external_identities import ExternalIdentityService
from registry_store.groups import GroupService
from registry_store.server_key import KEY_FILE, ServerKey
from registry_store.service import RegistryService
from registry_store.users import UserService
from registry_store.webhook_secrets import SecretBox

__all__ = ["Services", "build_services", "newer_schema", "now_ms", "prepare", "temporal_connector", "temporal_tls"]

log = logging.getLogger("calabi.bootstrap")


def now_ms() -> int:
    """Wall-clock time in epoch milliseconds."""
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class Services:
    """Everything the API, the CLI and the worker need."""

    settings: Settings
    db: Database
    registry: RegistryService
    users: UserService
    groups: GroupService
    identities: ExternalIdentityService
    """People signing in through OpenID Connect (``registry_store/external_identities.py``)."""
    artifacts: ArtifactStore
    promotions: PromotionService
    tracking: TrackingClient | None = None
    audit_anchor: AuditAnchor | None = None
    """The signed anchor ``calabi audit verify`` checks and advances (``registry_store/audit_anchor.py``)."""

    def close(self) -> None:
        """Release database connections and the tracking server's connection pool."""
        self.db.engine.dispose()
        if self.tracking is not None:
            self.tracking.close()


def build_services(settings: Settings) -> Services:
    """Build the services (nothing is created, migrated or written: see ``prepare``)."""
    db = Database(make_engine(settings.resolved_database_url(), pool_size=settings.database_pool_size))
    artifacts = make_artifact_store(settings.resolved_artifact_root(), settings.s3_endpoint_url)
    database_file = db.engine.url.database if not db.is_postgres and db.engine.url.database else None
    secret = [settings.data_dir, *([Path(database_file)] if database_file else [])]
    private = [*secret, *([artifacts.root] if isinstance(artifacts, LocalArtifactStore) else [])]
    fetcher = SourceFetcher(
        local_roots=list(settings.local_source_roots), s3_endpoint_url=settings.s3_endpoint_url,
        private_paths=private, secret_paths=secret,
    )
    tracking = _tracking_client(settings)
    if tracking is not None:
        fetcher.tracking_resolver = TrackingSourceResolver(tracking, copy=fetcher.fetch)
    key = ServerKey(settings.data_dir / KEY_FILE)
    context = RegistryContext.build(
        db, artifacts=artifacts, fetcher=fetcher, clock=now_ms, protected_aliases=settings.protected_aliases,
        observer=observe_committed,
        policy_dir=settings.resolved_policy_dir(),
        secrets=SecretBox(key), public_url=settings.public_url or settings.url,
    )
    registry = RegistryService(context)
    promotions = PromotionService(registry, temporal_connector(settings), task_queue=settings.temporal_task_queue)
    return Services(
        settings=settings, db=db, registry=registry, users=UserService(db, clock=now_ms, key=key),
        groups=GroupService(db, clock=now_ms), identities=ExternalIdentityService(db, clock=now_ms),
        artifacts=artifacts, promotions=promotions, tracking=tracking,
        audit_anchor=AuditAnchor(settings.data_dir / ANCHOR_FILE, key),
    )


def _make_private(data_dir: Path) -> None:
    """Make the data dir 0700 and what it holds directly 0600 (files) or 0700 (directories).

    New files are private by the server's umask (``calabi serve``); this tightens a data dir
    created by an older version or another tool.
    """
    data_dir.chmod(0o700)
    for entry in data_dir.iterdir():
        if not entry.is_symlink():
            entry.chmod(0o700 if entry.is_dir() else 0o600)


def prepare(settings: Settings, *, generated_admin_token: bool = False) -> bool:
    """Ready the data dir once before serving: schema, first admin (``admin_token``), the system webhooks of
    ``webhook_urls``, orphan sweep, and private modes for the data dir and what it holds (also what this call
    created).

    True when an admin owns ``admin_token`` (or none is given). ``generated_admin_token``: the token is one
    ``serve`` generated, stored only if it seeds the first admin (``UserService.ensure_admin``)."""
    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    settings.data_dir.chmod(0o700)
    upgrade_database(settings.resolved_database_url())
    services = build_services(settings)
    try:
        if isinstance(services.artifacts, LocalArtifactStore):
            services.artifacts.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            services.artifacts.root.chmod(0o700)
        try:
            services.registry.artifacts.sweep_orphans(min_age_s=settings.orphan_min_age_s)
        except RegistryError as exc:  # an unreachable S3 store: maintenance never blocks the start
            log.warning("orphan sweep skipped at start-up: %s", exc)
        admin_owns_token = settings.admin_token is None or services.users.ensure_admin(
            settings.admin_token.get_secret_value(), first_only=generated_admin_token)
        secret = settings.webhook_secret.get_secret_value() if settings.webhook_secret else ""
        services.registry.system_webhooks.ensure(settings.webhook_urls, secret)
    finally:
        services.close()
    _make_private(settings.data_dir)
    return admin_owns_token


def newer_schema(settings: Settings) -> str | None:
    """Why this code must not serve the configured database (a newer Calabi migrated it), or None.

    Read-only: a missing SQLite file is not created (``prepare`` creates and migrates it).
    """
    url = settings.resolved_database_url()
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        return None
    db = Database(make_engine(url, pool_size=1))
    try:
        revision = db.schema_revision()
    finally:
        db.engine.dispose()
    return revision.too_new_message() if revision.newer_than_code else None


def _tracking_client(settings: Settings) -> TrackingClient | None:
    """A client for the configured MLflow tracking server, or None when there is none."""
    if not settings.mlflow_tracking_url:
        return None
    token = settings.mlflow_tracking_token
    return TrackingClient(settings.mlflow_tracking_url, token=token.get_secret_value() if token else None)


def temporal_connector(settings: Settings, runtime: Runtime | None = None) -> Callable[[], Awaitable[Client]]:
    """A function connecting to the configured Temporal frontend with the pydantic converter (on ``runtime``,
    e.g. one exporting the SDK's metrics; traced when tracing is on: ``calabi/tracing.py``)."""

    async def connect() -> Client:
        return await Client.connect(
            settings.resolved_temporal_address(),
            namespace=settings.temporal_namespace,
            tls=temporal_tls(settings),
            api_key=settings.temporal_api_key.get_secret_value() if settings.temporal_api_key else None,
            data_converter=pydantic_data_converter,
            interceptors=temporal_interceptors(),
            runtime=runtime,
        )

    return connect


def temporal_tls(settings: Settings) -> bool | TLSConfig:
    """The ``tls`` argument for the Temporal client: off, on with the system roots, or a TLSConfig with the
    configured CA and client certificate (mTLS); any of the files switches TLS on."""
    files = (settings.temporal_tls_ca_file, settings.temporal_tls_cert_file, settings.temporal_tls_key_file)
    if not any(files):
        return settings.temporal_tls
    ca, cert, key = (path.read_bytes() if path is not None else None for path in files)
    return TLSConfig(server_root_ca_cert=ca, client_cert=cert, client_private_key=key)
