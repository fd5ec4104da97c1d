"""A pooled model loader: runs in the sandbox as ``python -I -c <this file's text>``, loads ONE model, exits.

Self-contained (the standard library, mlflow and sklearn only) so nothing of the registry is loaded
next to untrusted code. It imports mlflow and sklearn first, then writes ``ready`` to stdout and
waits for one line on stdin: the candidate's files are in ``/candidate`` by then (an empty
directory bind-mounted read-only when the process started, filled by the worker). It writes its
answer to ``/scratch/result.json`` and exits; the interpreter is never reused.

Answers (``status``):

* ``importances``: ``names``, ``values`` (``feature_importances_`` or ``coef_``), ``scale_dependent``
  (raw ``coef_`` with no scaler before the estimator) and ``estimator`` (its class name);
* ``none``: loaded fine, exposes no importances (``reason``);
* ``unloadable``: loading raised (``error``: the exception's type and message);
* ``exhausted``: loading ran out of memory or recursion depth (a limit, not the model's verdict).

A model that kills its interpreter while loading leaves no answer (the exit status tells).
"""

import json
import os
import sys
import traceback
from typing import Any

CANDIDATE = "/candidate"
RESULT = "/scratch/result.json"
_SCALER_NAMES = (
    "StandardScaler", "MinMaxScaler", "RobustScaler", "MaxAbsScaler", "Normalizer", "QuantileTransformer",
    "PowerTransformer",
)


def _has_scaler(step: Any, scalers: tuple[type, ...]) -> bool:
    """Whether ``step`` is a scaler or holds one (nested pipelines, column transformers, feature unions)."""
    if isinstance(step, scalers):
        return True
    inner = [s for _n, s in getattr(step, "steps", None) or []]
    inner += [t for _n, t, *_cols in getattr(step, "transformers", None) or []]
    inner += [t for _n, t in getattr(step, "transformer_list", None) or []]
    return any(_has_scaler(s, scalers) for s in inner if s not in (None, "drop", "passthrough"))


def _answer(model: Any, scalers: tuple[type, ...]) -> dict[str, Any]:
    steps: Any = getattr(model, "steps", None)
    is_pipeline = isinstance(steps, list) and bool(steps)
    estimator = steps[-1][1] if is_pipeline else model
    kind = type(estimator).__name__
    names = getattr(model, "feature_names_in_", None)
    if names is None:
        names = getattr(estimator, "feature_names_in_", None)
    values = getattr(estimator, "feature_importances_", None)
    scale_dependent = False
    if values is None:
        values = getattr(estimator, "coef_", None)
        scaled = is_pipeline and any(_has_scaler(s, scalers) for _n, s in steps[:-1])
        scale_dependent = values is not None and not scaled
    if values is None:
        return {"status": "none", "reason": f"{kind} exposes neither feature_importances_ nor coef_"}
    if names is None:
        return {"status": "none", "reason": f"{kind} was fitted without feature names"}
    return {"status": "importances", "names": [str(n) for n in names], "values": values.tolist(),
            "scale_dependent": bool(scale_dependent), "estimator": kind}


def main() -> None:
    """Warm up, signal ready, wait for the go line, load the model, write the answer."""
    import mlflow.sklearn
    import sklearn.preprocessing

    for warm in ("skops.io", "cloudpickle"):  # what load_model imports on first use (skops alone: ~1.5 s)
        try:
            __import__(warm)
        except ImportError:
            pass

    scalers = tuple(getattr(sklearn.preprocessing, name) for name in _SCALER_NAMES)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    os.dup2(2, 1)  # whatever the model prints goes to stderr, never into the control pipe
    if not sys.stdin.readline():
        return  # the pool closed before handing over a job
    answer: dict[str, Any]
    try:
        answer = _answer(mlflow.sklearn.load_model(CANDIDATE), scalers)
    except (MemoryError, RecursionError) as exc:
        answer = {"status": "exhausted", "error": f"{type(exc).__name__}: {exc}"}
    except BaseException as exc:  # the model's own code raised while loading: a deterministic failure
        traceback.print_exc()
        answer = {"status": "unloadable", "error": f"{type(exc).__name__}: {exc}"[:2000]}
    with open(RESULT, "w") as out:
        json.dump(answer, out)
    sys.stderr.flush()
    os._exit(0)  # the answer is written: skip tearing down an interpreter full of mlflow (most of a warm load)


if __name__ == "__main__":
    main()
