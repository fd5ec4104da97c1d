"""An S3 artifact root (moto server): registration copies into ``s3://bucket/registry/<model>/<uuid>/``
from S3 and local sources, and deletion removes exactly the registry's copy (DESIGN §3, invariant 6)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from registry_store.artifacts import tree_digest
from registry_store.entities import ModelVersion
from registry_store.errors import RegistryError
from tests.integration.helpers import DATABASES, Registry, build_registry, database_url

MODEL = "churn-predictor"
PREFIX = "registry"
SOURCE_FILES = {
    "MLmodel": b"artifact_path: model\nflavors:\n  python_function:\n    loader_module: mlflow.sklearn\n",
    "model.pkl": b"\x80\x04weights",
    "data/features.json": b'["tenure", "plan"]',
}


@pytest.fixture
def s3(s3_endpoint: str) -> Any:
    return boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")


@pytest.fixture(params=DATABASES)
def reg(request: pytest.FixtureRequest, tmp_path: Path, s3_endpoint: str, s3_bucket: str) -> Iterator[Registry]:
    registry = build_registry(
        tmp_path, database_url(request, tmp_path),
        artifact_root=f"s3://{s3_bucket}/{PREFIX}", s3_endpoint_url=s3_endpoint,
    )
    registry.model(MODEL)
    yield registry
    registry.services.close()


def keys(s3: Any, bucket: str, prefix: str) -> list[str]:
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=prefix)
    assert not listed.get("IsTruncated")
    return sorted(item["Key"] for item in listed.get("Contents", []))


def upload_source(s3: Any, bucket: str) -> str:
    """Upload the source model under ``sources/<uuid>/``; return its ``s3://`` prefix."""
    prefix = f"sources/{uuid.uuid4().hex}"
    for rel, content in SOURCE_FILES.items():
        s3.put_object(Bucket=bucket, Key=f"{prefix}/{rel}", Body=content)
    return f"s3://{bucket}/{prefix}"


def expected_digest(tmp: Path) -> str:
    tree = tmp / "expected"
    for rel, content in SOURCE_FILES.items():
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_bytes(content)
    return tree_digest(tree)


def copy_key(reg: Registry, bucket: str, mv: ModelVersion) -> str:
    """The key prefix of the registry's copy, checked to be ``<prefix>/<model>/<uuid>``."""
    match = re.fullmatch(rf"s3://{re.escape(bucket)}/({PREFIX}/{MODEL}/[0-9a-f]{{32}})", mv.storage_location)
    assert match, mv.storage_location
    assert reg.artifact_root == f"s3://{bucket}/{PREFIX}"
    return match.group(1)


def download_digest(s3: Any, bucket: str, key: str, tmp: Path) -> str:
    out = tmp / "downloaded"
    for object_key in keys(s3, bucket, f"{key}/"):
        target = out / object_key.removeprefix(f"{key}/")
        target.parent.mkdir(parents=True, exist_ok=True)
        s3.download_file(bucket, object_key, str(target))
    return tree_digest(out)


def test_registering_an_s3_source_copies_it_under_the_registry_prefix_with_the_same_digest(
    reg: Registry, s3: Any, s3_bucket: str, tmp_path: Path
) -> None:
    source = upload_source(s3, s3_bucket)

    mv = reg.svc.registration.create_model_version(reg.engineer, name=MODEL, source=source)

    key = copy_key(reg, s3_bucket, mv)
    assert keys(s3, s3_bucket, f"{key}/") == sorted(f"{key}/{rel}" for rel in SOURCE_FILES)
    assert mv.digest == expected_digest(tmp_path)
    assert download_digest(s3, s3_bucket, key, tmp_path) == mv.digest


def test_registering_a_local_directory_copies_it_under_the_registry_prefix_with_the_same_digest(
    reg: Registry, s3: Any, s3_bucket: str, tmp_path: Path
) -> None:
    source = reg.artifact(payload=b"local weights")

    mv = reg.svc.registration.create_model_version(reg.engineer, name=MODEL, source=str(source))

    key = copy_key(reg, s3_bucket, mv)
    assert keys(s3, s3_bucket, f"{key}/") == [f"{key}/MLmodel", f"{key}/model.pkl"]
    assert mv.digest == tree_digest(source)
    assert download_digest(s3, s3_bucket, key, tmp_path) == mv.digest


def test_deleting_a_version_removes_its_objects_and_leaves_the_source_and_other_versions_alone(
    reg: Registry, s3: Any, s3_bucket: str
) -> None:
    source = upload_source(s3, s3_bucket)
    source_keys = keys(s3, s3_bucket, "sources/")
    first = reg.svc.registration.create_model_version(reg.engineer, name=MODEL, source=source)
    second = reg.svc.registration.create_model_version(reg.engineer, name=MODEL, source=source)

    reg.svc.versions.delete_model_version(reg.engineer, name=MODEL, version=1)

    assert keys(s3, s3_bucket, f"{copy_key(reg, s3_bucket, first)}/") == []
    assert len(keys(s3, s3_bucket, f"{copy_key(reg, s3_bucket, second)}/")) == len(SOURCE_FILES)
    assert keys(s3, s3_bucket, "sources/") == source_keys


def test_deleting_the_model_removes_every_object_under_its_registry_prefix(
    reg: Registry, s3: Any, s3_bucket: str
) -> None:
    source = upload_source(s3, s3_bucket)
    reg.svc.registration.create_model_version(reg.engineer, name=MODEL, source=source)
    reg.svc.registration.create_model_version(reg.engineer, name=MODEL, source=str(reg.artifact()))

    reg.svc.models.delete_registered_model(reg.engineer, MODEL)

    assert keys(s3, s3_bucket, f"{PREFIX}/") == []
    assert len(keys(s3, s3_bucket, "sources/")) == len(SOURCE_FILES)


@pytest.mark.parametrize("kind", ["missing prefix", "missing bucket"])
def test_an_unreadable_s3_source_leaves_no_version_no_audit_event_and_no_objects(
    reg: Registry, s3: Any, s3_bucket: str, kind: str
) -> None:
    source = {
        "missing prefix": f"s3://{s3_bucket}/sources/nothing-here",
        "missing bucket": f"s3://no-such-bucket-{uuid.uuid4().hex[:12]}/model",
    }[kind]
    before = reg.audit_count()

    with pytest.raises(RegistryError) as info:
        reg.svc.registration.create_model_version(reg.engineer, name=MODEL, source=source)

    assert info.value.error_code == "INVALID_PARAMETER_VALUE"
    assert reg.scalar("SELECT count(*) FROM model_versions") == 0
    assert reg.audit_count() == before
    assert keys(s3, s3_bucket, f"{PREFIX}/") == []
