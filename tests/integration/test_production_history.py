"""ProductionHistoryService on SQLite and PostgreSQL: stints, the version at an instant, renames, re-creation.

The registry runs on a clock the test sets, so every boundary is an exact, known millisecond.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from registry_store.audit import Actor
from registry_store.errors import NotFoundError, PermissionDeniedError
from registry_store.service import RegistryService
from tests.integration.helpers import DATABASES, Clock, Registry, build_registry, database_url


@pytest.fixture(params=DATABASES)
def reg(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Registry]:
    registry = build_registry(tmp_path, database_url(request, tmp_path))
    yield registry
    registry.services.close()


def at(svc: RegistryService, reg: Registry, name: str, instant: object) -> int | None:
    return svc.production.production_at(reg.viewer, name, instant).version


def test_stints_follow_renames_and_end_at_deletion_and_a_recreated_name_starts_afresh(reg: Registry) -> None:
    clock = Clock(now=1_000)
    svc = RegistryService(replace(reg.svc.context, clock=clock))
    reg.versions("churn", 3)

    def move(name: str, version: int, stage: str, when: int) -> None:
        clock.now = when
        svc.stages.transition_stage(reg.admin, name=name, version=version, stage=stage)

    move("churn", 1, "Production", 10_000)
    move("churn", 2, "Staging", 15_000)  # not a Production move: no boundary
    move("churn", 2, "Production", 20_000)
    clock.now = 25_000
    svc.models.rename_registered_model(reg.admin, name="churn", new_name="churn-v2")
    move("churn-v2", 3, "Production", 30_000)
    clock.now = 40_000
    svc.versions.delete_model_version(reg.admin, name="churn-v2", version=3)

    stints = svc.production.production_history(reg.viewer, "churn-v2").stints
    assert [(s.version, s.since, s.until, s.break_glass) for s in stints] == [
        (3, 30_000, 40_000, True), (2, 20_000, 30_000, True), (1, 10_000, 20_000, True)]
    assert {s.moved_by for s in stints} == {s.ended_by for s in stints} == {reg.admin.name}
    expected = {0: None, 9_999: None, 10_000: 1, 19_999: 1, 20_000: 2, 25_000: 2, 30_000: 3, 39_999: 3, 40_000: None}
    assert {instant: at(svc, reg, "churn-v2", instant) for instant in expected} == expected
    assert at(svc, reg, "churn-v2", "1970-01-01T00:00:20Z") == 2
    assert at(svc, reg, "churn-v2", "1970-01-01T00:00:19.999") == 1
    assert svc.production.previous_production_version(reg.viewer, "churn-v2") == 2

    svc.models.create_registered_model(reg.engineer, name="churn")  # the old name, a new model
    assert svc.production.production_history(reg.viewer, "churn").stints == []
    assert at(svc, reg, "churn", 15_000) is None
    with pytest.raises(NotFoundError, match="no earlier Production version"):
        svc.production.previous_production_version(reg.viewer, "churn")


def test_reading_the_history_needs_the_viewer_role_and_an_existing_model(reg: Registry) -> None:
    reg.model("churn")
    nobody = Actor(name="nobody", roles=frozenset())

    with pytest.raises(PermissionDeniedError):
        reg.svc.production.production_history(nobody, "churn")
    with pytest.raises(NotFoundError):
        reg.svc.production.production_at(reg.viewer, "missing", 0)
