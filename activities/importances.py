"""Feature importances of a candidate's sklearn model, read by a pooled loader in the sandbox.

Loading an MLflow sklearn model deserializes it (pickle, cloudpickle, or skops with an
allow-list the artifact itself declares), which can run code shipped with the artifact or
crash the interpreter. So it is loaded only by a warm single-use loader of
``activities.loader_pool`` (the sandbox: no secrets, database, data dir, other process or
network; CPU, memory and time limits), whose answer is untrusted data.

Three outcomes, never confused:

* importances (``source="model"``), with whether they are scale-dependent (raw ``coef_`` of a
  linear model with no scaler in front), or none (``source="none"``, with the reason): the
  model loaded and this is what it exposes;
* ``ModelUnloadableError`` (``MODEL_UNLOADABLE``, not retried): the model's own code raised or
  killed its interpreter while loading;
* ``SandboxLimitError`` / ``SandboxUnavailableError`` (retried): a timeout, a CPU or memory
  limit, a sandbox or loader that did not start. Infrastructure, never a result about the model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from activities.loader_pool import LoaderPool, ModelUnloadableError, Tick
from activities.sandbox import SandboxLimitError
from policies.importances import from_model_values

__all__ = ["LOADER_VERSION", "ModelImportances", "interpreted", "model_importances"]

LOADER_VERSION = 2
"""What the loader reports and how; stored evidence of an older loader version is computed again."""


@dataclass(frozen=True)
class ModelImportances:
    """What a loaded model exposes: importances (``model``) or none (``none``, ``note`` says why)."""

    source: Literal["model", "none"]
    importances: dict[str, float] = field(default_factory=dict)
    scale_dependent: bool = False
    note: str = ""


def model_importances(pool: LoaderPool, fill: Callable[[Path], None], *, tick: Tick) -> ModelImportances:
    """Take a loader, ``fill`` its candidate directory with the model's files, load it, read the answer."""
    with pool.loader() as loader:
        fill(loader.candidate)
        answer = loader.run(tick)
    return interpreted(answer)


def interpreted(answer: dict[str, Any]) -> ModelImportances:
    """The loader's answer (untrusted JSON) as a result, or the error it reports."""
    status = answer.get("status")
    if status == "importances":
        try:
            names, values = answer["names"], answer["values"]
            if not isinstance(names, list) or not isinstance(values, list):
                raise TypeError("names and values must be lists")
            importances = from_model_values([str(name) for name in names], values)
        except (KeyError, TypeError) as exc:
            raise ModelUnloadableError(f"the model loader's answer is malformed: {exc}") from exc
        except ValueError as exc:
            return ModelImportances(source="none", note=f"its importances do not map to its input features: {exc}")
        estimator = str(answer.get("estimator", "the model"))
        scale_dependent = answer.get("scale_dependent") is True
        note = f"raw coef_ of {estimator} with no scaler in front" if scale_dependent else ""
        return ModelImportances(source="model", importances=importances, scale_dependent=scale_dependent, note=note)
    if status == "none":
        return ModelImportances(source="none", note=str(answer.get("reason", ""))[:500])
    if status == "exhausted":
        raise SandboxLimitError(f"loading the model ran out of a sandbox limit: {answer.get('error', '')}")
    if status == "unloadable":
        raise ModelUnloadableError(f"the model could not be loaded: {answer.get('error', '')}")
    raise ModelUnloadableError(f"the model loader's answer has no known status: {str(status)[:100]!r}")
