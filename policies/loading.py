"""Load a model's promotion policy: ``default.toml``, its risk tier's overlay, then ``models/<model>.toml``.

Risk tiers are declared in the default file as ``[tiers.<name>…]`` tables (e.g.
``[tiers.high.production.sign_off]``); a model with a tier gets that overlay deep-merged into
the default before its own override. Merge rule: tables merge key by key; scalars, arrays
(including arrays of tables) and the ``absolute_thresholds`` table replace the earlier value.
Every declared tier is validated at each load (so a broken tier is refused before a model
uses it); any problem raises ``PolicyError`` naming the file and the dotted field
(``policies/models/churn.toml: production.metrics.direction: Input should be ...``). A
field error is attributed to the last layer that sets that field (or, for a missing field,
its table): the override, then the tier (``tiers.high.production…`` in the default file),
then the default.

When ``<dir>/default.toml`` does not exist the packaged default is used.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from policies._base import Frozen
from policies.errors import PolicyError
from policies.models import PromotionPolicy

__all__ = [
    "PACKAGED_DEFAULT", "LoadedPolicy", "declared_tiers", "default_policy_text", "load_policy", "policy_hash",
]

PACKAGED_DEFAULT = "package:policies/default.toml"
_REPLACED_TABLES = frozenset({"absolute_thresholds"})
_TIERS = "tiers"


class LoadedPolicy(Frozen):
    """A validated policy, its content hash, the files it came from (default first) and the risk tier applied."""

    policy: PromotionPolicy
    content_hash: str
    sources: list[str]
    tier: str | None = None


@dataclass(frozen=True)
class _Layer:
    """One document of the merge, the file it came from and the dotted prefix of its fields there."""

    document: dict[str, Any]
    file: str
    prefix: str = ""


def default_policy_text() -> str:
    """The packaged ``default.toml``."""
    return resources.files("policies").joinpath("default.toml").read_text(encoding="utf-8")


def policy_hash(policy: PromotionPolicy) -> str:
    """sha256 hex of the canonical JSON (sorted keys, compact) of a validated policy."""
    canonical = json.dumps(policy.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def load_policy(directory: Path, model_name: str, *, tier: str | None = None) -> LoadedPolicy:
    """Load, merge and validate the policy for ``model_name`` of risk ``tier``; raises ``PolicyError``.

    A ``tier`` the default file does not declare is refused (the model's tier outlived its declaration).
    """
    default, tiers = _default_layers(directory)
    sources = [default.file]
    layers = [default]
    if tier is not None:
        if tier not in tiers:
            raise PolicyError(f"{default.file}: risk tier {tier!r} is not declared (declared: "
                              f"{', '.join(sorted(tiers)) or 'none'})", file=default.file, field=f"{_TIERS}.{tier}")
        layers.append(tiers[tier])
    override_path = _override_path(directory / "models", model_name)
    if override_path is not None:
        sources.append(str(override_path))
        layers.append(_Layer(document=_parse(_read(override_path), str(override_path)), file=str(override_path)))
    policy = _validated(layers)
    return LoadedPolicy(policy=policy, content_hash=policy_hash(policy), sources=sources, tier=tier)


def declared_tiers(directory: Path) -> list[str]:
    """The risk tiers the default policy declares, sorted (each validated); raises ``PolicyError``."""
    return sorted(_default_layers(directory)[1])


def _default_layers(directory: Path) -> tuple[_Layer, dict[str, _Layer]]:
    """The default document (without its tiers) and each declared tier's overlay, every tier validated."""
    if not directory.is_dir():
        raise PolicyError(f"{directory}: policy directory does not exist", file=str(directory))
    default_path = directory / "default.toml"
    if default_path.is_file():
        file = str(default_path)
        document = _parse(_read(default_path), file)
    else:
        file = PACKAGED_DEFAULT
        document = _parse(default_policy_text(), file)
    declared = document.pop(_TIERS, {})
    if not isinstance(declared, dict) or not all(isinstance(t, dict) for t in declared.values()):
        raise PolicyError(f"{file}: {_TIERS}: each tier must be a table ([{_TIERS}.<name>...])", file=file,
                          field=_TIERS)
    default = _Layer(document=document, file=file)
    tiers = {name: _Layer(document=overlay, file=file, prefix=f"{_TIERS}.{name}.")
             for name, overlay in declared.items()}
    for name in sorted(tiers):
        _validated([default, tiers[name]])
    return default, tiers


def _validated(layers: list[_Layer]) -> PromotionPolicy:
    merged: dict[str, Any] = {}
    for layer in layers:
        merged = _merge(merged, layer.document)
    try:
        return PromotionPolicy.model_validate(merged)
    except ValidationError as exc:
        raise _policy_error(exc, layers) from None


def _override_path(models_dir: Path, model_name: str) -> Path | None:
    # Compare directory entries instead of joining the name into a path: no traversal.
    if not models_dir.is_dir():
        return None
    wanted = f"{model_name}.toml"
    return next((entry for entry in models_dir.iterdir() if entry.name == wanted and entry.is_file()), None)


def _read(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read policy file: {exc.strerror or exc}", file=str(path)) from None
    except UnicodeDecodeError as exc:
        message = f"{path}: policy file is not UTF-8: {exc.reason} at byte {exc.start}"
        raise PolicyError(message, file=str(path)) from None


def _parse(text: str, file: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"{file}: invalid TOML: {exc}", file=file) from None


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        current = merged.get(key)
        if isinstance(value, dict) and isinstance(current, dict) and key not in _REPLACED_TABLES:
            merged[key] = _merge(current, value)
        else:
            merged[key] = value
    return merged


def _field_path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def _contains(document: Any, loc: tuple[int | str, ...]) -> bool:
    for part in loc:
        if isinstance(part, int) and isinstance(document, list) and 0 <= part < len(document):
            document = document[part]
        elif isinstance(part, str) and isinstance(document, dict) and part in document:
            document = document[part]
        else:
            return False
    return True


def _owner(loc: tuple[int | str, ...], missing: bool, layers: list[_Layer]) -> _Layer:
    """The layer an error belongs to: the last one setting the field (for a missing field, its table)."""
    found = [layer for layer in layers if layer.document]
    for layer in reversed(found):
        if _contains(layer.document, loc):
            return layer
    if not missing:
        return layers[0]
    for layer in reversed(found):
        if _contains(layer.document, loc[:-1]):
            return layer
    return found[-1] if found else layers[0]


def _message(error: Any) -> str:
    text = str(error["msg"]).removeprefix("Value error, ")
    value = error.get("input")
    if error["type"] != "missing" and isinstance(value, str | int | float | bool):
        shown = repr(value)
        if shown not in text:
            text += f" (got {shown[:60]}{'…' if len(shown) > 60 else ''})"
    return text


def _policy_error(exc: ValidationError, layers: list[_Layer]) -> PolicyError:
    lines: list[tuple[str, str, str]] = []
    for error in exc.errors():
        loc = tuple(error["loc"])
        layer = _owner(loc, error["type"] == "missing", layers)
        path = _field_path(loc)
        lines.append((layer.file, f"{layer.prefix}{path}" if path else layer.prefix.rstrip("."), _message(error)))
    file, field, _ = lines[0]
    message = "\n".join(f"{f}: {p or '(top level)'}: {m}" for f, p, m in lines)
    return PolicyError(message, file=file, field=field or None)
