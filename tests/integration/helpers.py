"""Shared helpers for the service-level integration tests: a bootstrapped registry with users."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import text

from calabi.bootstrap import Services, build_services, prepare
from calabi.settings import Settings
from registry_store.audit import Actor
from registry_store.entities import ModelVersion
from registry_store.service import RegistryService
from tests.fixtures.servers import make_artifact

DATABASES = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh database URL of the kind named by ``request.param`` ("sqlite" or "postgres")."""
    if request.param == "postgres":
        url: str = request.getfixturevalue("postgres_url")
        return url
    return f"sqlite:///{tmp_path / 'registry.db'}"


@dataclass
class Clock:
    """A clock the test sets, in epoch milliseconds."""

    now: int = 1_800_000_000_000

    def __call__(self) -> int:
        return self.now


@dataclass
class Registry:
    """A bootstrapped registry plus one actor per role and the directories it uses."""

    services: Services
    admin: Actor
    engineer: Actor
    approver: Actor
    viewer: Actor
    source_root: Path
    artifact_root: str

    @property
    def svc(self) -> RegistryService:
        return self.services.registry

    def artifact(self, payload: bytes | None = None) -> Path:
        """A fresh MLmodel directory below the allowed source root."""
        return make_artifact(self.source_root, payload=payload)

    def scalar(self, sql: str, **params: object) -> Any:
        """One value from a raw SQL query."""
        with self.services.db.engine.connect() as conn:
            return conn.execute(text(sql), params).scalar_one()

    def rows(self, sql: str, **params: object) -> list[tuple[Any, ...]]:
        """All rows of a raw SQL query."""
        with self.services.db.engine.connect() as conn:
            return [tuple(row) for row in conn.execute(text(sql), params)]

    def execute(self, sql: str, **params: object) -> int:
        """Run a raw SQL statement in its own committed transaction; the affected row count."""
        with self.services.db.engine.begin() as conn:
            return int(conn.execute(text(sql), params).rowcount)

    def drop_audit_guards(self) -> None:
        """Drop the triggers that make audit events append-only: what a DBA turned attacker could do."""
        postgres = self.services.db.is_postgres
        for event in ("update", "delete"):
            self.execute(f"DROP TRIGGER audit_events_no_{event}" + (" ON audit_events" if postgres else ""))

    def audit_count(self) -> int:
        return int(self.scalar("SELECT count(*) FROM audit_events"))

    def model(self, name: str) -> str:
        """Create an empty model as the admin; return its name."""
        self.svc.models.create_registered_model(self.admin, name=name)
        return name

    def versions(self, name: str, count: int) -> list[ModelVersion]:
        """Create ``name`` (if needed) and register ``count`` versions of fresh artifacts."""
        if not self.scalar("SELECT count(*) FROM registered_models WHERE name = :n", n=name):
            self.model(name)
        return [self.svc.registration.create_model_version(self.admin, name=name,
                                                           source=str(self.artifact())) for _ in range(count)]


def build_registry(
    tmp_path: Path, url: str, *, artifact_root: str | None = None, s3_endpoint_url: str | None = None
) -> Registry:
    """Prepare (migrations, first admin), build the services and create one user per role."""
    source_root = tmp_path / "sources"
    source_root.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(16)
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=url,
        local_source_roots=[source_root],
        admin_token=SecretStr(token),
        artifact_root=artifact_root,
        s3_endpoint_url=s3_endpoint_url,
    )
    prepare(settings)
    services = build_services(settings)
    admin = services.users.authenticate(token)
    actors = {}
    for role in ("engineer", "approver", "viewer"):
        _user, user_token = services.users.create_user(admin, name=f"{role}-user", roles=[role])
        actors[role] = services.users.authenticate(user_token)
    return Registry(
        services=services,
        admin=admin,
        engineer=actors["engineer"],
        approver=actors["approver"],
        viewer=actors["viewer"],
        source_root=source_root,
        artifact_root=settings.resolved_artifact_root(),
    )


def files_below(root: Path) -> list[Path]:
    """Every regular file below ``root`` (empty if it does not exist)."""
    if not root.exists():
        return []
    return sorted(Path(d, f) for d, _dirs, names in os.walk(root) for f in names)
