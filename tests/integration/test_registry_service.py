"""RegistryService against real databases (SQLite and PostgreSQL): the six invariants of DESIGN §3
and the role rules of §6, each checked through the service and, where it matters, in the database."""

from __future__ import annotations

import inspect
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col

import registry_store.context
from registry_store.artifacts import tree_digest
from registry_store.context import ServiceBase
from registry_store.errors import RegistryError
from registry_store.tables import ModelVersionRow
from tests.integration.helpers import DATABASES, Registry, build_registry, database_url, files_below

MODEL = "churn-predictor"


@pytest.fixture(params=DATABASES)
def reg(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Registry]:
    registry = build_registry(tmp_path, database_url(request, tmp_path))
    yield registry
    registry.services.close()


def error_code(call: Callable[[], object]) -> str:
    """Run ``call``, which must fail with a domain error; return its MLflow error code."""
    with pytest.raises(RegistryError) as info:
        call()
    return info.value.error_code


def stages(reg: Registry, name: str = MODEL) -> dict[int, str]:
    page = reg.svc.versions.search_model_versions(reg.viewer, filter_string=f"name = '{name}'")
    return {mv.version: mv.current_stage for mv in page.items}


def local_path(location: str) -> Path:
    assert location.startswith("file://"), location
    return Path(unquote(urlsplit(location).path))


def last_event(reg: Registry) -> dict[str, Any]:
    events = reg.svc.audit.list_audit_events(reg.viewer, limit=10_000)
    return events[-1].model_dump()


# ------------------------------------------------------------------ invariant 1: numbering


def test_versions_are_numbered_one_two_three_in_registration_order(reg: Registry) -> None:
    created = reg.versions(MODEL, 3)

    assert [mv.version for mv in created] == [1, 2, 3]
    assert sorted(stages(reg)) == [1, 2, 3]


def test_a_deleted_version_number_is_never_reused(reg: Registry) -> None:
    reg.versions(MODEL, 3)
    reg.svc.versions.delete_model_version(reg.admin, name=MODEL, version=3)

    again = reg.svc.registration.create_model_version(reg.admin, name=MODEL, source=str(reg.artifact()))

    assert again.version == 4
    assert sorted(stages(reg)) == [1, 2, 4]


def test_a_deleted_and_recreated_model_numbers_its_versions_from_one_again(reg: Registry) -> None:
    reg.versions(MODEL, 2)
    reg.svc.models.delete_registered_model(reg.admin, MODEL)

    reg.model(MODEL)
    again = reg.svc.registration.create_model_version(reg.admin, name=MODEL, source=str(reg.artifact()))

    assert again.version == 1


# ------------------------------------------------------------------ invariant 2: one Production


def test_a_second_version_sent_to_production_archives_the_incumbent_without_archive_existing(
    reg: Registry,
) -> None:
    reg.versions(MODEL, 2)
    reg.svc.stages.transition_stage(reg.admin, name=MODEL, version=1, stage="Production")

    moved = reg.svc.stages.transition_stage(
        reg.admin, name=MODEL, version=2, stage="Production", archive_existing_versions=False
    )

    assert moved.current_stage == "Production"
    assert stages(reg) == {1: "Archived", 2: "Production"}


def test_the_database_refuses_to_update_a_second_row_of_a_model_to_production(reg: Registry) -> None:
    reg.versions(MODEL, 2)
    reg.svc.stages.transition_stage(reg.admin, name=MODEL, version=1, stage="Production")

    with Session(reg.services.db.engine) as session, pytest.raises(IntegrityError):
        session.execute(
            update(ModelVersionRow)
            .where(col(ModelVersionRow.version) == 2)
            .values(current_stage="Production")
        )
        session.commit()

    assert stages(reg) == {1: "Production", 2: "None"}


def test_the_database_refuses_to_insert_a_second_production_row_for_a_model(reg: Registry) -> None:
    (v1,) = reg.versions(MODEL, 1)
    reg.svc.stages.transition_stage(reg.admin, name=MODEL, version=1, stage="Production")
    model_id = reg.scalar("SELECT id FROM registered_models WHERE name = :n", n=MODEL)

    with Session(reg.services.db.engine) as session, pytest.raises(IntegrityError):
        session.add(ModelVersionRow(
            model_id=model_id, version=99, current_stage="Production", source=v1.source,
            storage_location=v1.storage_location, digest=v1.digest, creation_timestamp=0,
            last_updated_timestamp=0,
        ))
        session.commit()

    assert stages(reg) == {1: "Production"}


def test_the_one_production_index_is_per_model_so_two_models_may_each_have_one(reg: Registry) -> None:
    reg.versions("model-a", 1)
    reg.versions("model-b", 1)

    reg.svc.stages.transition_stage(reg.admin, name="model-a", version=1, stage="Production")
    reg.svc.stages.transition_stage(reg.admin, name="model-b", version=1, stage="Production")

    assert stages(reg, "model-a") == {1: "Production"}
    assert stages(reg, "model-b") == {1: "Production"}


def test_archive_existing_to_staging_archives_other_staging_versions_but_not_production(
    reg: Registry,
) -> None:
    reg.versions(MODEL, 4)
    reg.svc.stages.transition_stage(reg.admin, name=MODEL, version=1, stage="Production")
    reg.svc.stages.transition_stage(reg.engineer, name=MODEL, version=2, stage="Staging")
    reg.svc.stages.transition_stage(reg.engineer, name=MODEL, version=3, stage="Staging")

    reg.svc.stages.transition_stage(reg.engineer, name=MODEL, version=4, stage="Staging",
                                    archive_existing_versions=True)

    assert stages(reg) == {1: "Production", 2: "Archived", 3: "Archived", 4: "Staging"}


def test_staging_without_archive_existing_keeps_the_other_staging_versions(reg: Registry) -> None:
    reg.versions(MODEL, 2)
    reg.svc.stages.transition_stage(reg.engineer, name=MODEL, version=1, stage="Staging")

    reg.svc.stages.transition_stage(reg.engineer, name=MODEL, version=2, stage="Staging")

    assert stages(reg) == {1: "Staging", 2: "Staging"}


@pytest.mark.parametrize("stage", ["Archived", "None"])
def test_archive_existing_with_an_inactive_target_stage_is_an_invalid_parameter(reg: Registry, stage: str) -> None:
    reg.versions(MODEL, 2)
    reg.svc.stages.transition_stage(reg.engineer, name=MODEL, version=1, stage="Staging")
    before = reg.audit_count()

    code = error_code(lambda: reg.svc.stages.transition_stage(
        reg.engineer, name=MODEL, version=2, stage=stage, archive_existing_versions=True
    ))

    assert code == "INVALID_PARAMETER_VALUE"
    assert stages(reg) == {1: "Staging", 2: "None"}
    assert reg.audit_count() == before


# ------------------------------------------------------------------ invariant 3: immutable bytes


IMMUTABLE_FIELDS = {"source", "run_id", "digest", "signature", "storage_location"}


def test_no_service_method_that_addresses_an_existing_version_takes_source_run_id_digest_or_signature(
    reg: Registry,
) -> None:
    services = [service for service in vars(reg.svc).values() if isinstance(service, ServiceBase)]
    addressing_a_version = {
        name: set(inspect.signature(method).parameters)
        for service in services
        for name, method in inspect.getmembers(type(service), inspect.isfunction)
        if not name.startswith("_") and "version" in inspect.signature(method).parameters
    }
    assert {"update_model_version", "transition_stage", "set_alias"} <= set(addressing_a_version)

    offenders = {name: sorted(IMMUTABLE_FIELDS & params) for name, params in addressing_a_version.items()}

    assert {name: fields for name, fields in offenders.items() if fields} == {}


def test_update_model_version_changes_only_the_description(reg: Registry) -> None:
    created = reg.svc.registration.create_model_version(
        reg.admin, name=reg.model(MODEL), source=str(reg.artifact()), run_id="run-123", description="old"
    )

    updated = reg.svc.versions.update_model_version(reg.engineer, name=MODEL, version=1, description="new")

    assert updated.description == "new"
    assert updated.model_dump(exclude={"description", "last_updated_timestamp"}) == created.model_dump(
        exclude={"description", "last_updated_timestamp"}
    )


def test_stage_tag_and_alias_changes_leave_source_run_id_digest_and_signature_unchanged(reg: Registry) -> None:
    created = reg.svc.registration.create_model_version(
        reg.admin, name=reg.model(MODEL), source=str(reg.artifact()), run_id="run-123"
    )

    reg.svc.stages.transition_stage(reg.admin, name=MODEL, version=1, stage="Production")
    reg.svc.versions.set_model_version_tag(reg.engineer, name=MODEL, version=1, key="k", value="v")
    reg.svc.aliases.set_alias(reg.engineer, name=MODEL, alias="candidate", version=1)
    after = reg.svc.versions.get_model_version(reg.viewer, name=MODEL, version=1)

    assert after.model_dump(include=IMMUTABLE_FIELDS) == created.model_dump(include=IMMUTABLE_FIELDS)
    assert created.signature  # the MLmodel's signature was read; an empty one would prove nothing


def test_the_digest_is_the_tree_digest_of_the_source_and_of_the_registry_copy(reg: Registry) -> None:
    source = reg.artifact(payload=b"weights")

    created = reg.svc.registration.create_model_version(reg.admin, name=reg.model(MODEL), source=str(source))

    assert created.digest == tree_digest(source)
    assert tree_digest(local_path(created.storage_location)) == created.digest
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", created.digest)


# ------------------------------------------------------------------ invariant 4: aliases


def test_an_alias_on_a_missing_version_is_resource_does_not_exist(reg: Registry) -> None:
    reg.versions(MODEL, 1)

    code = error_code(lambda: reg.svc.aliases.set_alias(reg.engineer, name=MODEL, alias="candidate", version=7))

    assert code == "RESOURCE_DOES_NOT_EXIST"
    assert reg.svc.models.get_registered_model(reg.viewer, MODEL).aliases == []


def test_deleting_a_version_deletes_its_aliases(reg: Registry) -> None:
    reg.versions(MODEL, 2)
    reg.svc.aliases.set_alias(reg.engineer, name=MODEL, alias="candidate", version=2)
    reg.svc.aliases.set_alias(reg.engineer, name=MODEL, alias="other", version=1)

    reg.svc.versions.delete_model_version(reg.engineer, name=MODEL, version=2)

    assert [a.alias for a in reg.svc.models.get_registered_model(reg.viewer, MODEL).aliases] == ["other"]
    assert error_code(lambda: reg.svc.aliases.get_version_by_alias(reg.viewer, name=MODEL, alias="candidate")) == (
        "INVALID_PARAMETER_VALUE"  # MLflow answers a missing alias with 400 INVALID_PARAMETER_VALUE
    )
    assert reg.scalar("SELECT count(*) FROM registered_model_aliases WHERE alias = 'candidate'") == 0


def test_setting_an_existing_alias_again_repoints_it_to_the_new_version(reg: Registry) -> None:
    reg.versions(MODEL, 2)
    reg.svc.aliases.set_alias(reg.engineer, name=MODEL, alias="candidate", version=1)

    reg.svc.aliases.set_alias(reg.engineer, name=MODEL, alias="candidate", version=2)

    assert reg.svc.aliases.get_version_by_alias(reg.viewer, name=MODEL, alias="candidate").version == 2
    assert reg.svc.versions.get_model_version(reg.viewer, name=MODEL, version=1).aliases == []
    assert [(a.alias, a.version) for a in reg.svc.models.get_registered_model(reg.viewer, MODEL).aliases] == [
        ("candidate", 2)
    ]


@pytest.mark.parametrize("alias", ["latest", "LATEST", "v1", "V12"])
def test_a_reserved_alias_is_refused(reg: Registry, alias: str) -> None:
    reg.versions(MODEL, 1)

    code = error_code(lambda: reg.svc.aliases.set_alias(reg.admin, name=MODEL, alias=alias, version=1))

    assert code == "INVALID_PARAMETER_VALUE"
    assert reg.svc.models.get_registered_model(reg.viewer, MODEL).aliases == []


# ------------------------------------------------------------------ invariant 5: audit


def _setup(reg: Registry) -> None:
    """Model with v1 (Production, tagged, aliased) and v2 (Staging); the state every mutation starts from."""
    reg.svc.models.create_registered_model(reg.admin, name=MODEL, tags=[("team", "risk")])
    reg.svc.models.create_registered_model(reg.admin, name="taken")
    for _ in range(2):
        reg.svc.registration.create_model_version(reg.admin, name=MODEL, source=str(reg.artifact()))
    reg.svc.stages.transition_stage(reg.admin, name=MODEL, version=1, stage="Production")
    reg.svc.stages.transition_stage(reg.admin, name=MODEL, version=2, stage="Staging")
    reg.svc.versions.set_model_version_tag(reg.admin, name=MODEL, version=1, key="k", value="v")
    reg.svc.aliases.set_alias(reg.admin, name=MODEL, alias="candidate", version=2)


MUTATIONS: dict[str, tuple[str, Callable[[Registry], object]]] = {
    "create model": ("create_registered_model", lambda r: r.svc.models.create_registered_model(r.engineer, name="new")),
    "update model": ("update_registered_model",
                     lambda r: r.svc.models.update_registered_model(r.engineer, name=MODEL, description="d")),
    "rename model": ("rename_registered_model",
                     lambda r: r.svc.models.rename_registered_model(r.admin, name=MODEL, new_name="x")),
    "delete model": ("delete_registered_model", lambda r: r.svc.models.delete_registered_model(r.admin, MODEL)),
    "set model tag": ("set_registered_model_tag",
                      lambda r: r.svc.models.set_registered_model_tag(r.engineer, name=MODEL, key="team", value="ops")),
    "delete model tag": ("delete_registered_model_tag",
                         lambda r: r.svc.models.delete_registered_model_tag(r.engineer, name=MODEL, key="team")),
    "move alias": ("set_alias", lambda r: r.svc.aliases.set_alias(r.engineer, name=MODEL, alias="candidate",
                                                                  version=1)),
    "delete alias": ("delete_alias", lambda r: r.svc.aliases.delete_alias(r.engineer, name=MODEL, alias="candidate")),
    "register version": ("create_model_version",
                         lambda r: r.svc.registration.create_model_version(r.engineer, name=MODEL,
                                                                           source=str(r.artifact()))),
    "update version": ("update_model_version",
                       lambda r: r.svc.versions.update_model_version(r.engineer, name=MODEL, version=1,
                                                                     description="d")),
    "delete version": ("delete_model_version",
                       lambda r: r.svc.versions.delete_model_version(r.engineer, name=MODEL, version=2)),
    "archive version": ("transition_stage",
                        lambda r: r.svc.stages.transition_stage(r.engineer, name=MODEL, version=2, stage="Archived")),
    "promote archiving the incumbent": (
        "transition_stage", lambda r: r.svc.stages.transition_stage(r.admin, name=MODEL, version=2,
                                                                    stage="Production")),
    "stage archiving existing Staging": (
        "transition_stage", lambda r: r.svc.stages.transition_stage(
            r.admin, name=MODEL, version=1, stage="Staging", archive_existing_versions=True)),
    "set version tag": ("set_model_version_tag", lambda r: r.svc.versions.set_model_version_tag(
        r.engineer, name=MODEL, version=1, key="k", value="w")),
    "delete version tag": ("delete_model_version_tag", lambda r: r.svc.versions.delete_model_version_tag(
        r.engineer, name=MODEL, version=1, key="k")),
    "complete the break-glass review": ("complete_review", lambda r: r.svc.reviews.complete_review(
        r.approver, 1, outcome="accepted")),
    "escalate the break-glass review": ("escalate_review", lambda r: r.svc.reviews.escalate_review(r.admin, 1)),
}


@pytest.mark.parametrize("kind", list(MUTATIONS))
def test_every_kind_of_mutation_appends_exactly_one_audit_event(reg: Registry, kind: str) -> None:
    _setup(reg)
    action, mutate = MUTATIONS[kind]
    before = reg.audit_count()

    mutate(reg)

    assert reg.audit_count() == before + 1
    event = last_event(reg)
    assert (event["action"], event["seq"]) == (action, before + 1)


FAILURES: dict[str, tuple[Callable[[Registry], object], str]] = {
    "duplicate model": (lambda r: r.svc.models.create_registered_model(r.engineer, name=MODEL),
                        "RESOURCE_ALREADY_EXISTS"),
    "rename onto an existing model": (
        lambda r: r.svc.models.rename_registered_model(r.admin, name=MODEL, new_name="taken"),
        "RESOURCE_ALREADY_EXISTS"),
    "version of a missing model": (
        lambda r: r.svc.registration.create_model_version(r.engineer, name="nope", source=str(r.artifact())),
        "RESOURCE_DOES_NOT_EXIST"),
    "transition of a missing version": (
        lambda r: r.svc.stages.transition_stage(r.engineer, name=MODEL, version=9, stage="Staging"),
        "RESOURCE_DOES_NOT_EXIST"),
    "alias on a missing version": (
        lambda r: r.svc.aliases.set_alias(r.engineer, name=MODEL, alias="a", version=9), "RESOURCE_DOES_NOT_EXIST"),
    "invalid stage": (
        lambda r: r.svc.stages.transition_stage(r.engineer, name=MODEL, version=2, stage="Prod"),
        "INVALID_PARAMETER_VALUE"),
    "viewer writes": (
        lambda r: r.svc.versions.update_model_version(r.viewer, name=MODEL, version=1, description="d"),
        "PERMISSION_DENIED"),
    "engineer moves to Production": (
        lambda r: r.svc.stages.transition_stage(r.engineer, name=MODEL, version=2, stage="Production"),
        "PERMISSION_DENIED"),
    "unreadable source": (
        lambda r: r.svc.registration.create_model_version(r.engineer, name=MODEL,
                                                          source=str(r.source_root / "missing")),
        "INVALID_PARAMETER_VALUE"),
}


@pytest.mark.parametrize("kind", list(FAILURES))
def test_a_failing_call_appends_no_audit_event(reg: Registry, kind: str) -> None:
    _setup(reg)
    call, expected_code = FAILURES[kind]
    before = reg.audit_count()

    assert error_code(lambda: call(reg)) == expected_code

    assert reg.audit_count() == before


class _AuditDown(Exception):
    pass


def test_a_mutation_whose_audit_append_fails_is_rolled_back_with_it(
    reg: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    _setup(reg)
    before = reg.audit_count()

    def failing_audit(*_args: object, **_kwargs: object) -> None:
        raise _AuditDown

    monkeypatch.setattr(registry_store.context, "append_event", failing_audit)
    with pytest.raises(_AuditDown):
        reg.svc.stages.transition_stage(reg.admin, name=MODEL, version=2, stage="Production")

    assert stages(reg) == {1: "Production", 2: "Staging"}
    assert reg.audit_count() == before


def test_audit_events_survive_the_deletion_of_their_model(reg: Registry) -> None:
    _setup(reg)
    events = reg.svc.audit.list_audit_events(reg.viewer, model_name=MODEL, limit=1000)

    reg.svc.models.delete_registered_model(reg.admin, MODEL)

    after = reg.svc.audit.list_audit_events(reg.viewer, model_name=MODEL, limit=1000)
    assert after[: len(events)] == events
    assert [e.action for e in after[len(events):]] == ["delete_registered_model"]
    assert reg.svc.audit.verify_audit_chain(reg.viewer).ok


def test_the_audit_actor_is_the_authenticated_user_and_before_after_describe_the_change(reg: Registry) -> None:
    reg.versions(MODEL, 1)

    reg.svc.stages.transition_stage(reg.engineer, name=MODEL, version=1, stage="staging")

    event = last_event(reg)
    assert (event["actor"], event["action"], event["subject"]) == ("engineer-user", "transition_stage", f"{MODEL}/1")
    assert event["before"] == {"stage": "None"}
    assert event["after"] == {"stage": "Staging", "archived": [], "break_glass": False}


# ------------------------------------------------------------------ invariant 6: the registry's copy


def test_registration_copies_the_artifact_into_artifact_root_model_uuid(reg: Registry) -> None:
    source = reg.artifact(payload=b"weights")

    created = reg.svc.registration.create_model_version(reg.engineer, name=reg.model(MODEL), source=str(source))

    copy = local_path(created.storage_location)
    assert copy.parent == Path(reg.artifact_root) / MODEL
    assert re.fullmatch(r"[0-9a-f]{32}", copy.name), copy.name
    assert {p.name: p.read_bytes() for p in copy.iterdir()} == {p.name: p.read_bytes() for p in source.iterdir()}
    assert created.source == str(source)


def test_two_registrations_of_the_same_source_get_separate_copies(reg: Registry) -> None:
    source = str(reg.artifact())

    first = reg.svc.registration.create_model_version(reg.engineer, name=reg.model(MODEL), source=source)
    second = reg.svc.registration.create_model_version(reg.engineer, name=MODEL, source=source)

    assert first.storage_location != second.storage_location
    assert first.digest == second.digest


def test_deleting_a_version_removes_its_copy_and_keeps_the_others(reg: Registry) -> None:
    v1, v2 = reg.versions(MODEL, 2)

    reg.svc.versions.delete_model_version(reg.engineer, name=MODEL, version=1)

    assert not local_path(v1.storage_location).exists()
    assert local_path(v2.storage_location).is_dir()


def test_deleting_a_model_removes_every_copy(reg: Registry) -> None:
    versions = reg.versions(MODEL, 3)

    reg.svc.models.delete_registered_model(reg.engineer, MODEL)

    assert [mv.version for mv in versions if local_path(mv.storage_location).exists()] == []
    assert files_below(Path(reg.artifact_root)) == []


def _unreadable_sources(reg: Registry, tmp: Path) -> dict[str, str]:
    outside = tmp / "outside"
    outside.mkdir(exist_ok=True)
    with_fifo = reg.artifact()
    os.mkfifo(with_fifo / "pipe")
    with_escape = reg.artifact()
    (outside / "secret").write_text("server-side secret")
    (with_escape / "link").symlink_to(outside / "secret")
    empty = reg.source_root / "empty"
    empty.mkdir()
    foreign = tmp / "foreign-model"
    foreign.mkdir()
    (foreign / "MLmodel").write_text("flavors: {}\n")
    return {
        "missing directory": str(reg.source_root / "does-not-exist"),
        "directory outside the allowed roots": str(foreign),
        "file URI outside the allowed roots": foreign.as_uri(),
        "dot-dot escape from a root": f"{reg.source_root}/../{foreign.name}",
        "relative path": "model",
        "empty directory": str(empty),
        "directory holding a FIFO": str(with_fifo),
        "symlink leaving the roots": str(with_escape),
        "unsupported scheme": "ftp://host/model",
    }


UNREADABLE = [
    "missing directory", "directory outside the allowed roots", "file URI outside the allowed roots",
    "dot-dot escape from a root", "relative path", "empty directory", "directory holding a FIFO",
    "symlink leaving the roots", "unsupported scheme",
]


@pytest.mark.parametrize("kind", UNREADABLE)
def test_an_unreadable_source_leaves_no_version_no_audit_event_and_no_files(
    reg: Registry, tmp_path: Path, kind: str
) -> None:
    source = _unreadable_sources(reg, tmp_path)[kind]
    reg.model(MODEL)
    before = reg.audit_count()

    code = error_code(lambda: reg.svc.registration.create_model_version(reg.engineer, name=MODEL, source=source))

    assert code == "INVALID_PARAMETER_VALUE"
    assert reg.scalar("SELECT count(*) FROM model_versions") == 0
    assert reg.audit_count() == before
    assert files_below(Path(reg.artifact_root)) == []
    assert reg.svc.registration.create_model_version(reg.engineer, name=MODEL, source=str(reg.artifact())).version == 1


# ------------------------------------------------------------------ roles (DESIGN §6)


VIEWER_WRITES: dict[str, Callable[[Registry], object]] = {
    "create model": lambda r: r.svc.models.create_registered_model(r.viewer, name="m2"),
    "register version": lambda r: r.svc.registration.create_model_version(r.viewer, name=MODEL,
                                                                          source=str(r.artifact())),
    "transition": lambda r: r.svc.stages.transition_stage(r.viewer, name=MODEL, version=2, stage="Archived"),
    "set alias": lambda r: r.svc.aliases.set_alias(r.viewer, name=MODEL, alias="a", version=2),
    "tag version": lambda r: r.svc.versions.set_model_version_tag(r.viewer, name=MODEL, version=2, key="k", value="v"),
    "delete version": lambda r: r.svc.versions.delete_model_version(r.viewer, name=MODEL, version=2),
    "delete model": lambda r: r.svc.models.delete_registered_model(r.viewer, MODEL),
}


@pytest.mark.parametrize("kind", list(VIEWER_WRITES))
def test_a_viewer_cannot_write(reg: Registry, kind: str) -> None:
    _setup(reg)
    before = reg.audit_count()

    assert error_code(lambda: VIEWER_WRITES[kind](reg)) == "PERMISSION_DENIED"
    assert reg.audit_count() == before


def test_an_approver_without_engineer_role_cannot_register_versions(reg: Registry) -> None:
    reg.model(MODEL)

    code = error_code(lambda: reg.svc.registration.create_model_version(reg.approver, name=MODEL,
                                                                        source=str(reg.artifact())))

    assert code == "PERMISSION_DENIED"


def test_an_engineer_cannot_move_a_version_into_production(reg: Registry) -> None:
    reg.versions(MODEL, 1)

    code = error_code(lambda: reg.svc.stages.transition_stage(reg.engineer, name=MODEL, version=1, stage="production"))

    assert code == "PERMISSION_DENIED"
    assert stages(reg) == {1: "None"}


def test_an_engineer_cannot_move_a_version_out_of_production(reg: Registry) -> None:
    reg.versions(MODEL, 1)
    reg.svc.stages.transition_stage(reg.admin, name=MODEL, version=1, stage="Production")

    code = error_code(lambda: reg.svc.stages.transition_stage(reg.engineer, name=MODEL, version=1, stage="Archived"))

    assert code == "PERMISSION_DENIED"
    assert stages(reg) == {1: "Production"}


def test_an_engineer_cannot_delete_the_production_version(reg: Registry) -> None:
    reg.versions(MODEL, 1)
    reg.svc.stages.transition_stage(reg.admin, name=MODEL, version=1, stage="Production")

    code = error_code(lambda: reg.svc.versions.delete_model_version(reg.engineer, name=MODEL, version=1))

    assert code == "PERMISSION_DENIED"
    assert stages(reg) == {1: "Production"}


def test_an_engineer_cannot_set_the_champion_alias(reg: Registry) -> None:
    reg.versions(MODEL, 1)

    code = error_code(lambda: reg.svc.aliases.set_alias(reg.engineer, name=MODEL, alias="champion", version=1))

    assert code == "PERMISSION_DENIED"
    assert reg.svc.models.get_registered_model(reg.viewer, MODEL).aliases == []


def test_an_engineer_cannot_delete_the_champion_alias(reg: Registry) -> None:
    reg.versions(MODEL, 1)
    reg.svc.aliases.set_alias(reg.admin, name=MODEL, alias="champion", version=1)

    code = error_code(lambda: reg.svc.aliases.delete_alias(reg.engineer, name=MODEL, alias="champion"))

    assert code == "PERMISSION_DENIED"
    assert reg.svc.aliases.get_version_by_alias(reg.viewer, name=MODEL, alias="champion").version == 1


def test_an_admin_moving_a_version_into_production_is_recorded_as_break_glass(reg: Registry) -> None:
    reg.versions(MODEL, 1)

    reg.svc.stages.transition_stage(reg.admin, name=MODEL, version=1, stage="Production")

    event = last_event(reg)
    assert (event["actor"], event["action"]) == (reg.admin.name, "transition_stage")
    assert event["after"]["break_glass"] is True


def test_an_admin_setting_the_champion_alias_is_recorded_as_break_glass(reg: Registry) -> None:
    reg.versions(MODEL, 1)

    reg.svc.aliases.set_alias(reg.admin, name=MODEL, alias="champion", version=1)

    event = last_event(reg)
    assert (event["actor"], event["action"]) == (reg.admin.name, "set_alias")
    assert event["after"] == {"alias": "champion", "version": 1, "break_glass": True}


def test_an_admin_deleting_the_production_version_is_recorded_as_break_glass(reg: Registry) -> None:
    """README: deleting the Production version needs admin and is recorded as break-glass."""
    reg.versions(MODEL, 1)
    reg.svc.stages.transition_stage(reg.admin, name=MODEL, version=1, stage="Production")

    reg.svc.versions.delete_model_version(reg.admin, name=MODEL, version=1)

    event = last_event(reg)
    assert (event["actor"], event["action"], event["before"]["stage"]) == (
        reg.admin.name, "delete_model_version", "Production")
    assert (event["after"] or {}).get("break_glass") is True, event["after"]


def test_an_admin_deleting_a_model_with_a_production_version_is_recorded_as_break_glass(reg: Registry) -> None:
    reg.versions(MODEL, 2)
    reg.svc.stages.transition_stage(reg.admin, name=MODEL, version=1, stage="Production")

    reg.svc.models.delete_registered_model(reg.admin, MODEL)

    event = last_event(reg)
    assert (event["actor"], event["action"]) == (reg.admin.name, "delete_registered_model")
    assert (event["after"] or {}).get("break_glass") is True, event["after"]


def test_an_engineer_cannot_remove_the_champion_alias_by_deleting_the_version_it_names(reg: Registry) -> None:
    """delete_alias('champion') is refused to an engineer; deleting its version must be too."""
    reg.versions(MODEL, 2)
    reg.svc.aliases.set_alias(reg.admin, name=MODEL, alias="champion", version=1)

    code = error_code(lambda: reg.svc.versions.delete_model_version(reg.engineer, name=MODEL, version=1))

    assert code == "PERMISSION_DENIED"
    assert reg.svc.aliases.get_version_by_alias(reg.viewer, name=MODEL, alias="champion").version == 1


def test_an_engineer_cannot_remove_the_champion_alias_by_deleting_its_model(reg: Registry) -> None:
    reg.versions(MODEL, 1)
    reg.svc.aliases.set_alias(reg.admin, name=MODEL, alias="champion", version=1)

    code = error_code(lambda: reg.svc.models.delete_registered_model(reg.engineer, MODEL))

    assert code == "PERMISSION_DENIED"
    assert reg.svc.aliases.get_version_by_alias(reg.viewer, name=MODEL, alias="champion").version == 1


def test_an_engineer_setting_an_ordinary_alias_is_not_break_glass(reg: Registry) -> None:
    reg.versions(MODEL, 1)

    reg.svc.aliases.set_alias(reg.engineer, name=MODEL, alias="challenger", version=1)

    assert last_event(reg)["after"] == {"alias": "challenger", "version": 1, "break_glass": False}


# ------------------------------------------------------------------ stages


@pytest.mark.parametrize("spelling", ["staging", "STAGING", "StAgInG", "Staging"])
def test_stages_are_case_insensitive_on_input_and_canonical_on_output(reg: Registry, spelling: str) -> None:
    reg.versions(MODEL, 1)

    moved = reg.svc.stages.transition_stage(reg.engineer, name=MODEL, version=1, stage=spelling)

    assert moved.current_stage == "Staging"
    assert [mv.version for mv in reg.svc.versions.get_latest_versions(reg.viewer, name=MODEL, stages=[spelling])] == [1]


@pytest.mark.parametrize("stage", ["Prod", "", "staging ", "Deployed"])
def test_an_unknown_stage_is_an_invalid_parameter(reg: Registry, stage: str) -> None:
    reg.versions(MODEL, 1)

    code = error_code(lambda: reg.svc.stages.transition_stage(reg.engineer, name=MODEL, version=1, stage=stage))

    assert code == "INVALID_PARAMETER_VALUE"
    assert stages(reg) == {1: "None"}
