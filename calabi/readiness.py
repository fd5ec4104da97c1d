"""``/ready``: whether this process can serve — database, migrations, artifact store, Temporal, tracking server.

The checks run concurrently, each bounded by ``CHECK_TIMEOUT_S``, so the answer comes within about that
even when every dependency hangs. A detail names what failed and why in one short line; it never
carries addresses, credentials or exception messages (which may quote either), only exception types.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

import httpx

from calabi.bootstrap import Services
from registry_store.artifacts import LocalArtifactStore
from registry_store.artifacts.store import S3ArtifactStore
from registry_store.schema_revision import SchemaRevision

__all__ = ["CHECK_TIMEOUT_S", "Check", "Readiness", "readiness"]

CHECK_TIMEOUT_S = 2.0
NOT_CONFIGURED = "not configured"
T = TypeVar("T")


@dataclass(frozen=True)
class Check:
    """One dependency's state: ``ok`` and a one-line detail."""

    ok: bool
    detail: str


@dataclass(frozen=True)
class Readiness:
    """Every check by name; ready when all are ok."""

    checks: dict[str, Check]

    @property
    def ready(self) -> bool:
        """All checks passed."""
        return all(check.ok for check in self.checks.values())

    def as_json(self) -> dict[str, object]:
        """The ``/ready`` body."""
        return {
            "ready": self.ready,
            "checks": {name: {"ok": c.ok, "detail": c.detail} for name, c in self.checks.items()},
        }


async def readiness(services: Services) -> Readiness:
    """Run every check concurrently, each bounded in time."""
    schema = asyncio.create_task(_bounded(asyncio.to_thread(services.db.schema_revision)))
    names_and_checks: list[tuple[str, Awaitable[Check]]] = [
        ("database", _database(schema)),
        ("migrations", _migrations(schema)),
        ("artifact_store", _guarded(asyncio.to_thread(_artifact_store, services))),
        ("temporal", _guarded(_temporal(services))),
        ("tracking_server", _guarded(_tracking_server(services.settings.mlflow_tracking_url))),
    ]
    results = await asyncio.gather(*(check for _, check in names_and_checks))
    return Readiness({name: result for (name, _), result in zip(names_and_checks, results, strict=True)})


async def _bounded(call: Awaitable[T]) -> T:
    return await asyncio.wait_for(call, CHECK_TIMEOUT_S)


def _failure(exc: BaseException) -> Check:
    if isinstance(exc, TimeoutError):
        return Check(False, f"no answer within {CHECK_TIMEOUT_S:g} s")
    return Check(False, f"unreachable ({type(exc).__name__})")


async def _guarded(check: Awaitable[Check]) -> Check:
    """A check's own result, or its failure (an exception or no answer in time) as a not-ok check."""
    try:
        return await _bounded(check)
    except Exception as exc:
        return _failure(exc)


async def _database(schema: asyncio.Task[SchemaRevision]) -> Check:
    try:
        await schema
    except Exception as exc:
        return _failure(exc)
    return Check(True, "reachable")


async def _migrations(schema: asyncio.Task[SchemaRevision]) -> Check:
    try:
        revision = await schema
    except Exception:
        return Check(False, "unknown: the database is not reachable")
    if revision.is_current:
        return Check(True, f"at head {revision.head}")
    if revision.newer_than_code:
        return Check(False, revision.too_new_message())
    return Check(False, f"database at revision {revision.current}, code head {revision.head}: run the migrations")


def _artifact_store(services: Services) -> Check:
    store = services.artifacts
    if isinstance(store, LocalArtifactStore):
        if not store.root.is_dir():
            return Check(False, "the root directory does not exist")
        if not os.access(store.root, os.W_OK | os.X_OK):
            return Check(False, "the root directory is not writable")
        return Check(True, "local root writable")
    if isinstance(store, S3ArtifactStore):
        store.client.head_bucket(Bucket=store.bucket)
        return Check(True, "bucket reachable")
    return Check(True, f"no probe for {type(store).__name__}")


async def _temporal(services: Services) -> Check:
    if services.settings.temporal_address is None:
        return Check(True, NOT_CONFIGURED)
    client = await services.promotions.client()
    if not await client.service_client.check_health(timeout=timedelta(seconds=CHECK_TIMEOUT_S)):
        return Check(False, "the frontend reports itself not serving")
    return Check(True, "reachable")


async def _tracking_server(url: str | None) -> Check:
    if not url:
        return Check(True, NOT_CONFIGURED)
    async with httpx.AsyncClient(timeout=CHECK_TIMEOUT_S) as http:
        response = await http.get(f"{url.rstrip('/')}/health")
    if response.status_code != 200:
        return Check(False, f"/health answered {response.status_code}")
    return Check(True, "reachable")
