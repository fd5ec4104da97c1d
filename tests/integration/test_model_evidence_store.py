"""``registry.model_evidence``: one stored answer (and one audit event) per artifact digest and loader version,
on SQLite and PostgreSQL, through the real migrations."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from registry_store.entities import ModelEvidence
from registry_store.errors import InvalidParameterError, PermissionDeniedError
from tests.integration.helpers import DATABASES, Registry, build_registry, database_url

VERSIONS = 5


@pytest.fixture(params=DATABASES)
def reg(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Registry]:
    """A registry whose model ``churn`` has VERSIONS versions of one artifact (one digest)."""
    registry = build_registry(tmp_path, database_url(request, tmp_path))
    artifact = registry.artifact()
    registry.model("churn")
    for _ in range(VERSIONS):
        registry.svc.registration.create_model_version(registry.admin, name="churn", source=str(artifact))
    yield registry
    registry.services.close()


def digest_of(reg: Registry, version: int = 1) -> str:
    digest: str = reg.svc.versions.get_model_version(reg.viewer, name="churn", version=version).digest
    return digest


def store(reg: Registry, *, loader_version: int = 2, source: str = "model", version: int = 1) -> ModelEvidence:
    stored: ModelEvidence = reg.svc.model_evidence.record_model_evidence(
        reg.admin, model="churn", version=version, importances_source=source,
        importances={"tenure": 0.7, "age": 0.3}, scale_dependent=True, note="raw coef_", flavors=["sklearn"],
        loader_version=loader_version)
    return stored


def recorded_events(reg: Registry) -> list[int | None]:
    return [e.version for e in reg.svc.audit.list_audit_events(reg.viewer, model_name="churn", limit=100)
            if e.action == "record_model_evidence"]


def test_evidence_is_stored_once_per_digest_and_loader_version(reg: Registry) -> None:
    assert reg.svc.model_evidence.get_model_evidence(reg.viewer, digest_of(reg), loader_version=2) is None

    with ThreadPoolExecutor(4) as pool:  # four workers finishing the same digest at once
        answers = list(pool.map(lambda v: store(reg, version=v), [1, 2, 3, 4]))

    first = reg.svc.model_evidence.get_model_evidence(reg.viewer, digest_of(reg), loader_version=2)
    assert first is not None and all(answer == first for answer in answers), answers
    assert (list(first.importances), first.scale_dependent, first.flavors) == (["tenure", "age"], True, ["sklearn"])
    assert len(recorded_events(reg)) == 1

    newer_loader = reg.svc.model_evidence.get_model_evidence(reg.viewer, digest_of(reg), loader_version=3)
    assert newer_loader is None, "a newer loader"
    newer = store(reg, loader_version=3, source="none", version=5)
    assert (newer.source, newer.loader_version) == ("none", 3)
    assert len(recorded_events(reg)) == 2 and 5 in recorded_events(reg)


def test_only_engineers_record_and_only_known_sources(reg: Registry) -> None:
    with pytest.raises(PermissionDeniedError):
        reg.svc.model_evidence.record_model_evidence(
            reg.viewer, model="churn", version=1, importances_source="model", importances={},
            scale_dependent=False, note="", flavors=[], loader_version=2)
    with pytest.raises(InvalidParameterError, match="Unknown importance source 'guessed'"):
        store(reg, source="guessed")


def test_evidence_is_keyed_by_the_versions_own_digest(reg: Registry) -> None:
    """The caller names a version, never a digest: evidence cannot be filed under another artifact."""
    other = reg.svc.registration.create_model_version(reg.admin, name="churn", source=str(reg.artifact(b"other")))

    stored = store(reg, version=other.version)

    assert stored.digest == other.digest != digest_of(reg)
    assert reg.svc.model_evidence.get_model_evidence(reg.viewer, digest_of(reg), loader_version=2) is None
