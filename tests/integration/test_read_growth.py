"""The hot reads do not grow with the registry: the same read on a model with 20 times more versions
makes SQLite execute no more bytecode (counted with a progress handler, so nothing here is timed)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event

from tests.integration.helpers import Registry, build_registry

SMALL, BIG = 12, 240
STEP = 50
"""The progress handler runs every STEP virtual-machine instructions."""

READS: dict[str, Callable[[Registry, str], object]] = {
    "get version": lambda r, m: r.svc.versions.get_model_version(r.viewer, name=m, version="7"),
    "get by alias": lambda r, m: r.svc.aliases.get_version_by_alias(r.viewer, name=m, alias="champion"),
    "get by alias latest": lambda r, m: r.svc.aliases.get_version_by_alias(r.viewer, name=m, alias="latest"),
    "get-latest, all stages": lambda r, m: r.svc.versions.get_latest_versions(r.viewer, name=m),
    "get-latest, one stage": lambda r, m: r.svc.versions.get_latest_versions(r.viewer, name=m, stages=["production"]),
    "get registered model": lambda r, m: r.svc.models.get_registered_model(r.viewer, m),
    "download URI": lambda r, m: r.svc.versions.get_download_uri(r.viewer, name=m, version="3"),
}


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """Models ``small`` and ``big`` alike but for their number of versions (stages, alias, tags)."""
    tmp = tmp_path_factory.mktemp("growth")
    reg = build_registry(tmp, f"sqlite:///{tmp / 'registry.db'}")
    for name, count in (("small", SMALL), ("big", BIG)):
        reg.versions(name, count)
        for number, stage in (("3", "Archived"), ("5", "Staging"), ("7", "Production")):
            reg.svc.stages.transition_stage(reg.admin, name=name, version=number, stage=stage)
        reg.svc.aliases.set_alias(reg.admin, name=name, alias="champion", version="7")
        reg.svc.versions.set_model_version_tag(reg.admin, name=name, version="7", key="team", value="ds")
        reg.svc.models.set_registered_model_tag(reg.admin, name=name, key="owner", value="ml")
    yield reg
    reg.services.close()


@contextmanager
def bytecode_steps(registry: Registry) -> Iterator[list[int]]:
    """Counts (in units of STEP instructions) what SQLite executes on the engine's connections."""
    count = [0]

    def tick() -> int:
        count[0] += 1
        return 0  # 0: go on

    def checkout(dbapi_connection: Any, *_rest: object) -> None:
        dbapi_connection.set_progress_handler(tick, STEP)

    def checkin(dbapi_connection: Any, *_rest: object) -> None:
        dbapi_connection.set_progress_handler(None, STEP)

    engine = registry.services.db.engine
    event.listen(engine, "checkout", checkout)
    event.listen(engine, "checkin", checkin)
    try:
        yield count
    finally:
        event.remove(engine, "checkout", checkout)
        event.remove(engine, "checkin", checkin)


def steps(registry: Registry, read: str, model: str) -> int:
    READS[read](registry, model)  # warm: the token cache, SQLAlchemy's statement cache
    with bytecode_steps(registry) as count:
        READS[read](registry, model)
    return count[0]


@pytest.mark.parametrize("read", list(READS))
def test_a_hot_read_costs_the_same_on_a_model_with_twenty_times_more_versions(registry: Registry, read: str) -> None:
    small, big = steps(registry, read, "small"), steps(registry, read, "big")

    assert small > 0
    assert big <= small + 2, f"{read}: {small} steps on {SMALL} versions, {big} on {BIG}"
