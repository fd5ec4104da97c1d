"""read_model_metadata: signature, flavors and ids from an MLflow MLmodel file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from registry_store.artifacts import ModelMetadata, read_model_metadata
from registry_store.errors import InvalidParameterError

INPUTS = '[{"type": "double", "name": "tenure", "required": true}]'
OUTPUTS = '[{"type": "long", "required": true}]'

MLMODEL = f"""\
artifact_path: model
flavors:
  sklearn:
    pickled_model: model.pkl
    sklearn_version: 1.5.0
  python_function:
    loader_module: mlflow.sklearn
    env:
      conda: conda.yaml
mlflow_version: 3.1.0
model_uuid: 5b7f2c0e9d8a4f1b8c6e2a3d4f5a6b7c
model_id: m-0123456789abcdef
run_id: 0a1b2c3d4e5f60718293a4b5c6d7e8f9
signature:
  inputs: '{INPUTS}'
  outputs: '{OUTPUTS}'
  params: null
utc_time_created: '2024-05-01 10:00:00.000000'
"""


def write_mlmodel(directory: Path, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "MLmodel").write_text(text)
    return directory


def test_metadata_is_read_from_the_mlmodel_file(tmp_path: Path) -> None:
    metadata = read_model_metadata(write_mlmodel(tmp_path, MLMODEL))

    assert metadata.flavors == ("python_function", "sklearn")
    assert metadata.run_id == "0a1b2c3d4e5f60718293a4b5c6d7e8f9"
    assert metadata.model_uuid == "5b7f2c0e9d8a4f1b8c6e2a3d4f5a6b7c"
    assert metadata.model_id == "m-0123456789abcdef"


def test_signature_keeps_inputs_and_outputs_as_the_json_strings_mlflow_wrote(tmp_path: Path) -> None:
    metadata = read_model_metadata(write_mlmodel(tmp_path, MLMODEL))

    assert json.loads(metadata.signature) == {"inputs": INPUTS, "outputs": OUTPUTS, "params": None}


def test_signature_is_canonical_whatever_the_key_order_in_the_file(tmp_path: Path) -> None:
    reordered = f"signature:\n  outputs: '{OUTPUTS}'\n  params: null\n  inputs: '{INPUTS}'\n"
    first = read_model_metadata(write_mlmodel(tmp_path / "a", MLMODEL)).signature
    second = read_model_metadata(write_mlmodel(tmp_path / "b", reordered)).signature

    assert first == second
    assert first == json.dumps(json.loads(first), sort_keys=True, separators=(",", ":"))


def test_a_tree_without_mlmodel_has_empty_metadata(tmp_path: Path) -> None:
    (tmp_path / "model.pkl").write_bytes(b"x")

    assert read_model_metadata(tmp_path) == ModelMetadata()
    assert read_model_metadata(tmp_path).signature == ""
    assert read_model_metadata(tmp_path / "model.pkl") == ModelMetadata()


def test_an_mlmodel_that_is_a_directory_or_a_fifo_gives_empty_metadata_without_blocking(tmp_path: Path) -> None:
    (tmp_path / "dir" / "MLmodel").mkdir(parents=True)
    (tmp_path / "fifo").mkdir()
    os.mkfifo(tmp_path / "fifo" / "MLmodel")  # no writer: a blocking open would never return

    assert read_model_metadata(tmp_path / "dir") == ModelMetadata()
    assert read_model_metadata(tmp_path / "fifo") == ModelMetadata()


def test_a_large_mlmodel_is_read_whole(tmp_path: Path) -> None:
    padding = "".join(f"k{i}: {'v' * 90}\n" for i in range(20_000))  # about 2 MB after the flavors
    metadata = read_model_metadata(write_mlmodel(tmp_path, MLMODEL + padding))

    assert metadata.flavors == ("python_function", "sklearn")
    assert json.loads(metadata.signature)["inputs"] == INPUTS


def test_an_mlmodel_without_signature_gives_an_empty_signature(tmp_path: Path) -> None:
    metadata = read_model_metadata(write_mlmodel(tmp_path, "flavors:\n  python_function: {}\n"))

    assert metadata.signature == ""
    assert metadata.flavors == ("python_function",)


def test_metadata_is_frozen(tmp_path: Path) -> None:
    metadata = read_model_metadata(write_mlmodel(tmp_path, MLMODEL))

    with pytest.raises(ValueError, match="frozen"):
        metadata.run_id = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("flavors: [unclosed\n", "not valid YAML"),
        ("- just\n- a list\n", "must be a YAML mapping"),
        ("flavors: [python_function]\n", "'flavors' must be a mapping"),
        ("signature: 'inputs only'\n", "'signature' must be a mapping"),
        ("run_id: {nested: true}\n", "'run_id' must be a string"),
    ],
)
def test_malformed_mlmodel_files_are_invalid_parameters(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(InvalidParameterError, match=message):
        read_model_metadata(write_mlmodel(tmp_path, text))


def test_a_yaml_alias_bomb_in_the_signature_is_refused(tmp_path: Path) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    bomb = "\n".join(lines) + "\nsignature:\n  inputs: *a8\n"

    with pytest.raises(InvalidParameterError, match="too large"):
        read_model_metadata(write_mlmodel(tmp_path, bomb))
