"""The inputs of the checks: plain data snapshotted by an activity.

``SignatureSchema.from_mlflow_json`` parses the signature JSON that MLflow writes in an
``MLmodel`` file (and that the registry stores): ``inputs``/``outputs`` are JSON *strings*
holding lists of column specs (already-decoded lists are accepted too). Column types are
kept as MLflow names (``double``, ``long``, ...); nested types become ``array<string>``,
``map<double>``, ``object<a:long,b:string>``. Tensor specs become fields typed
``tensor<float64>[-1,4]`` (unnamed ones named by position, ``[0]``) that are only
compatible with an identical type.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from pydantic import Field

from policies._base import Frozen

__all__ = [
    "GOVERNANCE_TAGS",
    "Evidence",
    "ImportancesSource",
    "SchemaField",
    "SignatureSchema",
    "TestRun",
    "VersionEvidence",
    "changed_parts",
    "evidence_hash",
    "evidence_parts",
]

GOVERNANCE_TAGS = frozenset({"validated_by", "validation_date"})
"""Tags only the promotion engine (or a break-glass admin) writes."""
ImportancesSource = Literal["recorded", "model", "none"]
"""Where a version's feature importances come from: a file recorded with the artifact, the loaded model, or
nowhere (the artifact records none and the model exposes none)."""


class SchemaField(Frozen):
    """One input or output column."""

    name: str
    type: str
    required: bool = True


class SignatureSchema(Frozen):
    """A model signature (or a serving schema) as column lists."""

    inputs: list[SchemaField] = []
    outputs: list[SchemaField] = []

    @classmethod
    def from_mlflow_json(cls, text: str) -> SignatureSchema | None:
        """Parse MLflow signature JSON; ``None`` for empty text or a signature without inputs.

        Raises ``ValueError`` naming the problem when the text is not a signature.
        """
        if not text or not text.strip():
            return None
        try:
            document = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"signature is not valid JSON: {exc}") from None
        if not isinstance(document, dict):
            raise ValueError("signature must be a JSON object with 'inputs' and 'outputs'")
        if document.get("inputs") in (None, "", "null"):
            return None
        inputs = _columns(document.get("inputs"), "inputs")
        return cls(inputs=inputs, outputs=_columns(document.get("outputs"), "outputs"))

    def input(self, name: str) -> SchemaField | None:
        """The input called ``name``, if any."""
        return next((field for field in self.inputs if field.name == name), None)


def _columns(value: object, where: str) -> list[SchemaField]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"signature {where} is not valid JSON: {exc}") from None
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValueError(f"signature {where} must be a list of column or tensor specs")
    fields: list[SchemaField] = []
    for index, spec in enumerate(value):
        if not isinstance(spec, dict):
            raise ValueError(f"signature {where}[{index}] must be an object")
        name = spec.get("name")
        required = spec.get("required", True)
        fields.append(
            SchemaField(
                name=name if isinstance(name, str) and name else f"[{index}]",
                type=_type_name(spec, f"{where}[{index}]"),
                required=required if isinstance(required, bool) else True,
            )
        )
    return fields


def _type_name(spec: dict[str, Any], where: str) -> str:
    kind = spec.get("type")
    if kind == "tensor":
        tensor = spec.get("tensor-spec")
        if not isinstance(tensor, dict) or not isinstance(tensor.get("dtype"), str):
            raise ValueError(f"signature {where}: tensor spec without a dtype")
        shape = tensor.get("shape")
        dims = ",".join(str(d) for d in shape) if isinstance(shape, list) else ""
        return f"tensor<{tensor['dtype']}>[{dims}]"
    if kind == "array":
        items = spec.get("items")
        return f"array<{_type_name(items, where) if isinstance(items, dict) else 'any'}>"
    if kind == "map":
        values = spec.get("values")
        return f"map<{_type_name(values, where) if isinstance(values, dict) else 'any'}>"
    if kind == "object":
        properties = spec.get("properties")
        if not isinstance(properties, dict):
            return "object<>"
        parts = [
            f"{key}:{_type_name(item, where) if isinstance(item, dict) else 'any'}"
            for key, item in sorted(properties.items())
        ]
        return f"object<{','.join(parts)}>"
    if isinstance(kind, str) and kind:
        return kind
    raise ValueError(f"signature {where}: column spec without a type")


class VersionEvidence(Frozen):
    """What the checks need to know about one model version."""

    version: int
    stage: str = "None"
    metrics: dict[str, float] = {}
    params: dict[str, str] = {}
    signature: SignatureSchema | None = None
    feature_importances: dict[str, float] = {}
    importances_source: ImportancesSource = "recorded"
    importances_scale_dependent: bool = False
    """Raw ``coef_`` of a linear model with no scaler in front: their magnitudes follow the features' scales."""
    importances_note: str = ""
    """Why there are none (``importances_source == "none"``), in a few words."""
    description: str = ""
    tags: dict[str, str] = {}
    digest: str = ""


class TestRun(Frozen):
    """The outcome of running the policy's test command against the candidate artifact."""

    __test__: ClassVar[bool] = False

    exit_code: int | None = None
    passed: int = Field(default=0, ge=0)
    failed: int = Field(default=0, ge=0)
    duration_s: float = Field(default=0.0, ge=0)
    output_tail: str = ""
    timed_out: bool = False


class Evidence(Frozen):
    """Everything one checklist evaluation looks at, snapshotted once per promotion.

    ``serving_schema`` is the registered model's own serving schema when one was set
    through the API/CLI; when it is ``None`` the signature check compares against the
    incumbent's (current Production) signature.
    """

    model: str
    target_stage: str
    candidate: VersionEvidence
    incumbent: VersionEvidence | None = None
    serving_schema: SignatureSchema | None = None
    test_run: TestRun | None = None
    requester: str = ""


def evidence_parts(
    *, digest: str, tags: Mapping[str, str], description: str, metrics: Mapping[str, Any], serving_schema: str,
    policy_hash: str,
) -> dict[str, str]:
    """One sha256 per part of a candidate's evidence (``tags``: only those the policy reads)."""
    parts: dict[str, Any] = {
        "artifact": digest, "tags": dict(tags), "description": description, "metrics": dict(metrics),
        "serving_schema": serving_schema, "policy": policy_hash,
    }
    return {name: _sha256(value) for name, value in parts.items()}


def evidence_hash(parts: Mapping[str, str]) -> str:
    """The one hash a promotion's sign-offs bind to."""
    return _sha256(dict(parts))


def changed_parts(recorded: Mapping[str, str], current: Mapping[str, str]) -> list[str]:
    """The names of the parts that differ (a part only one side has counts as changed)."""
    return sorted(name for name in recorded.keys() | current.keys() if recorded.get(name) != current.get(name))


def _sha256(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
