"""Metadata from an MLflow ``MLmodel`` file: signature, flavors, run and model ids."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict

from registry_store.errors import InvalidParameterError

__all__ = ["MLMODEL_FILE", "ModelMetadata", "read_model_metadata"]

_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the C parser when libyaml is there

MLMODEL_FILE = "MLmodel"
_MAX_BYTES = 16 * 1024 * 1024
_MAX_NODES = 1_000_000
_SIGNATURE_KEYS = ("inputs", "outputs", "params")


class ModelMetadata(BaseModel):
    """What the registry keeps from ``MLmodel``; empty strings and tuples when absent."""

    model_config = ConfigDict(frozen=True)

    signature: str = ""
    """Canonical JSON (sorted keys, no spaces) of ``inputs``/``outputs``/``params`` as given."""
    flavors: tuple[str, ...] = ()
    run_id: str = ""
    model_uuid: str = ""
    model_id: str = ""


def read_model_metadata(path: Path) -> ModelMetadata:
    """Read ``<path>/MLmodel`` if present; a tree without one (or a single file) gives empty metadata."""
    try:
        fd = os.open(path / MLMODEL_FILE, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # a FIFO never blocks
    except (FileNotFoundError, NotADirectoryError):
        return ModelMetadata()
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        return ModelMetadata()
    with os.fdopen(fd, "rb") as handle:
        if info.st_size > _MAX_BYTES:
            raise InvalidParameterError(f"MLmodel file is larger than {_MAX_BYTES} bytes")
        raw = handle.read(info.st_size + 1)  # sized by the file: no 16 MB buffer for a small one
    if len(raw) > info.st_size:
        raise InvalidParameterError("MLmodel file changed while it was read")
    try:
        document = yaml.load(raw, Loader=_SAFE_LOADER)
    except yaml.YAMLError as exc:
        raise InvalidParameterError(f"MLmodel file is not valid YAML: {exc}") from None
    except RecursionError:
        raise InvalidParameterError("MLmodel file is nested too deeply") from None
    if document is None:
        return ModelMetadata()
    if not isinstance(document, dict):
        raise InvalidParameterError("MLmodel file must be a YAML mapping")
    return ModelMetadata(
        signature=_signature(document.get("signature")),
        flavors=_flavors(document.get("flavors")),
        run_id=_scalar(document, "run_id"),
        model_uuid=_scalar(document, "model_uuid"),
        model_id=_scalar(document, "model_id"),
    )


def _signature(value: object) -> str:
    if value is None:
        return ""
    if not isinstance(value, dict):
        raise InvalidParameterError("MLmodel 'signature' must be a mapping")
    kept = {key: value[key] for key in _SIGNATURE_KEYS if key in value}
    try:
        _check_size(kept, [0])
        return json.dumps(kept, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    except RecursionError:
        raise InvalidParameterError("MLmodel 'signature' is nested too deeply") from None
    except (TypeError, ValueError) as exc:
        raise InvalidParameterError(f"MLmodel 'signature' cannot be represented as JSON: {exc}") from None


def _check_size(value: Any, seen: list[int]) -> None:
    """Refuse YAML alias bombs: count nodes including repeated references."""
    seen[0] += 1
    if seen[0] > _MAX_NODES:
        raise InvalidParameterError("MLmodel 'signature' is too large")
    if isinstance(value, dict):
        for item in value.values():
            _check_size(item, seen)
    elif isinstance(value, list):
        for item in value:
            _check_size(item, seen)


def _flavors(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise InvalidParameterError("MLmodel 'flavors' must be a mapping")
    return tuple(sorted(str(name) for name in value))


def _scalar(document: dict[Any, Any], key: str) -> str:
    value = document.get(key)
    if value is None:
        return ""
    if isinstance(value, dict | list):
        raise InvalidParameterError(f"MLmodel '{key}' must be a string")
    return str(value)
