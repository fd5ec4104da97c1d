"""Load a model's promotion policy: ``default.toml`` deep-merged with ``models/<model>.toml``.

Merge rule: tables merge key by key; scalars, arrays (including arrays of tables) and the
``absolute_thresholds`` table replace the default's value. The merged document is
validated once; any problem raises ``PolicyError`` naming the file and the dotted field
(``policies/models/churn.toml: production.metrics.direction: Input should be ...``). A
field error is attributed to the override when the override sets that field (or, for a
missing field, its table), otherwise to the default.

When ``<dir>/default.toml`` does not exist the packaged default is used.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from policies._base import Frozen
from policies.errors import PolicyError
from policies.models import PromotionPolicy

__all__ = ["PACKAGED_DEFAULT", "LoadedPolicy", "default_policy_text", "load_policy", "policy_hash"]

PACKAGED_DEFAULT = "package:policies/default.toml"
_REPLACED_TABLES = frozenset({"absolute_thresholds"})


class LoadedPolicy(Frozen):
    """A validated policy, its content hash and the files it came from (default first)."""

    policy: PromotionPolicy
    content_hash: str
    sources: list[str]


def default_policy_text() -> str:
    """The packaged ``default.toml``."""
    return resources.files("policies").joinpath("default.toml").read_text(encoding="utf-8")


def policy_hash(policy: PromotionPolicy) -> str:
    """sha256 hex of the canonical JSON (sorted keys, compact) of a validated policy."""
    canonical = json.dumps(policy.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def load_policy(directory: Path, model_name: str) -> LoadedPolicy:
    """Load, merge and validate the policy for ``model_name``; raises ``PolicyError``."""
    if not directory.is_dir():
        raise PolicyError(f"{directory}: policy directory does not exist", file=str(directory))
    default_path = directory / "default.toml"
    if default_path.is_file():
        default_source = str(default_path)
        default = _parse(_read(default_path), default_source)
    else:
        default_source = PACKAGED_DEFAULT
        default = _parse(default_policy_text(), default_source)
    sources = [default_source]
    override: dict[str, Any] = {}
    override_path = _override_path(directory / "models", model_name)
    if override_path is not None:
        sources.append(str(override_path))
        override = _parse(_read(override_path), str(override_path))
    merged = _merge(default, override)
    try:
        policy = PromotionPolicy.model_validate(merged)
    except ValidationError as exc:
        raise _policy_error(exc, default, default_source, override, sources[-1]) from None
    return LoadedPolicy(policy=policy, content_hash=policy_hash(policy), sources=sources)


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


def _blame(loc: tuple[int | str, ...], missing: bool, default: dict[str, Any], override: dict[str, Any]) -> bool:
    """True when the error belongs to the override file."""
    if _contains(override, loc):
        return True
    if _contains(default, loc) or not missing:
        return False
    return _contains(override, loc[:-1]) or not _contains(default, loc[:-1])


def _message(error: Any) -> str:
    text = str(error["msg"]).removeprefix("Value error, ")
    value = error.get("input")
    if error["type"] != "missing" and isinstance(value, str | int | float | bool):
        shown = repr(value)
        if shown not in text:
            text += f" (got {shown[:60]}{'…' if len(shown) > 60 else ''})"
    return text


def _policy_error(
    exc: ValidationError, default: dict[str, Any], default_file: str, override: dict[str, Any], override_file: str
) -> PolicyError:
    lines: list[tuple[str, str, str]] = []
    for error in exc.errors():
        loc = tuple(error["loc"])
        in_override = bool(override) and _blame(loc, error["type"] == "missing", default, override)
        lines.append((override_file if in_override else default_file, _field_path(loc), _message(error)))
    file, field, _ = lines[0]
    message = "\n".join(f"{f}: {p or '(top level)'}: {m}" for f, p, m in lines)
    return PolicyError(message, file=file, field=field or None)
