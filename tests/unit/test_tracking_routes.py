"""The tracking gateway's allow-list, artifact-location rule and audited ids (no server)."""

from __future__ import annotations

import json

import pytest

from calabi.api.tracking_routes import TrackingWrite, artifact_location_problem, match_route, written_ids

V2 = "/api/2.0/mlflow"
ARTIFACTS = "/api/2.0/mlflow-artifacts/artifacts"


@pytest.mark.parametrize(("method", "path", "write"), [
    ("GET", f"{V2}/experiments/get-by-name", False),
    ("POST", f"{V2}/runs/search", False),
    ("GET", f"{V2}/metrics/get-history", False),
    ("GET", f"{V2}/logged-models/m-1/artifacts/directories", False),
    ("GET", "/api/3.0/mlflow/server-info", False),
    ("GET", ARTIFACTS, False),
    ("GET", f"{ARTIFACTS}/1/r/artifacts/model/MLmodel", False),
    ("POST", f"{V2}/experiments/create", True),
    ("POST", f"{V2}/runs/log-batch", True),
    ("POST", f"{V2}/logged-models", True),
    ("PATCH", f"{V2}/logged-models/m-1", True),
    ("DELETE", f"{V2}/logged-models/m-1/tags/k", True),
    ("PUT", f"{ARTIFACTS}/1/r/artifacts/x.bin", True),
])
def test_listed_routes_and_whether_they_write(method: str, path: str, write: bool) -> None:
    matched = match_route(method, path)
    assert matched is not None and matched[0].write is write
    assert matched[0].json_body is (write and not path.startswith(ARTIFACTS))


@pytest.mark.parametrize(("method", "path"), [
    ("GET", f"{V2}/experiments/create"),
    ("PUT", f"{V2}/runs/create"),
    ("POST", f"{V2}/runs/create/extra"),
    ("POST", "/ajax-api/2.0/mlflow/upload-artifact"),
    ("POST", "/ajax-api/3.0/mlflow/assistant/message"),
    ("POST", "/api/3.0/mlflow/gateway/endpoints/create"),
    ("POST", "/ajax-api/3.0/jobs/search"),
    ("POST", "/api/3.0/mlflow/traces"),
    ("POST", "/api/2.0/mlflow-artifacts/mpu/create/x"),
    ("GET", "/api/2.0/mlflow-artifacts/presigned/x"),
    ("POST", f"{V2}/artifacts/presigned-upload-url"),
    ("GET", "/"),
])
def test_everything_else_is_off_the_list(method: str, path: str) -> None:
    assert match_route(method, path) is None


@pytest.mark.parametrize("value", [None, "", "mlflow-artifacts:/", "mlflow-artifacts:/team-a/x"])
def test_no_location_or_a_proxy_path_is_accepted(value: str | None) -> None:
    assert artifact_location_problem({"name": "e", "artifact_location": value}) is None


@pytest.mark.parametrize(("key", "value"), [
    ("artifact_location", "file:///srv/calabi/artifacts"),
    ("artifactLocation", "/srv/calabi/artifacts"),
    ("ARTIFACT_URI", "s3://bucket/x"),
    ("artifact_location", "mlflow-artifacts://evil:1/x"),
    ("artifact_location", "mlflow-artifacts:/a/../../x"),
    ("artifact_location", "mlflow-artifacts:/x?y=1"),
    ("artifact_location", "mlflow-artifacts:/calabi-registry/abc"),
    ("artifact_location", ["mlflow-artifacts:/x"]),
])
def test_any_other_location_is_refused(key: str, value: object) -> None:
    assert artifact_location_problem({"name": "e", key: value}) is not None


def ids(method: str, path: str, body: dict[str, object], answer: object = None) -> TrackingWrite:
    matched = match_route(method, path)
    assert matched is not None
    return written_ids(matched[1], body, json.dumps(answer).encode() if answer is not None else b"")


def test_the_ids_of_a_write_come_from_its_path_body_or_answer() -> None:
    assert ids("POST", f"{V2}/experiments/create", {"name": "e"}, {"experiment_id": "4"}) == TrackingWrite(
        experiment_id="4")
    created = {"run": {"info": {"run_id": "r1", "experiment_id": "4"}}}
    assert ids("POST", f"{V2}/runs/create", {"experiment_id": "4"}, created) == TrackingWrite("r1", "4")
    assert ids("POST", f"{V2}/runs/log-metric", {"run_id": "r1"}, {}) == TrackingWrite(run_id="r1")
    assert ids("POST", f"{V2}/runs/set-tag", {"run_uuid": "r2"}, {}) == TrackingWrite(run_id="r2")
    model = {"model": {"info": {"model_id": "m-9", "experiment_id": "4"}}}
    assert ids("POST", f"{V2}/logged-models", {"experiment_id": "4"}, model) == TrackingWrite("", "4", "m-9")
    assert ids("PATCH", f"{V2}/logged-models/m-9", {}) == TrackingWrite(model_id="m-9")
    assert ids("PUT", f"{ARTIFACTS}/4/r1/artifacts/x.bin", {}) == TrackingWrite("r1", "4")
    assert ids("PUT", f"{ARTIFACTS}/4/models/m-9/artifacts/MLmodel", {}) == TrackingWrite("", "4", "m-9")
    assert ids("POST", f"{V2}/runs/log-metric", {"run_id": "r1"}, ["not", "an", "object"]) == TrackingWrite("r1")
