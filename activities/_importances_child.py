"""Child process of ``activities.importances``: load an MLflow sklearn model, print its raw importances.

Run in the sandbox as ``python -I -c <this file's text> <model dir>``; self-contained (imports
only the standard library and mlflow) so nothing of the registry is loaded next to untrusted code.
Prints one JSON object ``{"names": [...], "values": [...]}`` (``values`` as in
``feature_importances_`` or ``coef_``), or ``{}`` when the model has neither or no
feature names. Any failure exits non-zero with the error on stderr.
"""

import json
import sys


def main(model_dir: str) -> None:
    """Print the model's feature names and importance values as JSON."""
    import mlflow.sklearn

    model = mlflow.sklearn.load_model(model_dir)
    steps = getattr(model, "steps", None)
    estimator = steps[-1][1] if isinstance(steps, list) and steps else model
    values = getattr(estimator, "feature_importances_", None)
    if values is None:
        values = getattr(estimator, "coef_", None)
    names = getattr(model, "feature_names_in_", None)
    if values is None or names is None:
        print("{}")
        return
    print(json.dumps({"names": [str(name) for name in names], "values": values.tolist()}))


if __name__ == "__main__":
    main(sys.argv[1])
