"""Feature importances computed from a candidate's sklearn model, in a child process.

Loading an MLflow sklearn model deserializes it (pickle, cloudpickle, or skops with an
allow-list the artifact itself declares), which can run code shipped with the artifact or
crash the interpreter. So the model is loaded by ``_importances_child.py`` in a separate,
isolated interpreter (``python -I``; cwd outside the artifact; the registry's settings and
credentials removed from its environment, see ``activities.test_runner.command_environment``),
killed after ``timeout_s``. Whatever goes wrong, the answer is "no importances" (logged):
the leakage check then fails with its own reason.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from activities.test_runner import command_environment
from policies.importances import from_model_values

__all__ = ["IMPORTANCES_TIMEOUT_S", "model_importances"]

log = logging.getLogger(__name__)
IMPORTANCES_TIMEOUT_S = 30.0
_CHILD = Path(__file__).with_name("_importances_child.py")
_STDERR_TAIL = 2000


def model_importances(model_dir: Path, *, timeout_s: float = IMPORTANCES_TIMEOUT_S) -> dict[str, float]:
    """``{feature: importance}`` of the sklearn model saved at ``model_dir``; empty when that is impossible."""
    with tempfile.TemporaryDirectory(prefix="calabi-importances-cwd-") as cwd:
        try:
            done = subprocess.run(
                [sys.executable, "-I", str(_CHILD), str(model_dir)], cwd=cwd, env=command_environment(os.environ),
                stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout_s, check=False,
            )
        except subprocess.TimeoutExpired:
            log.warning("loading the model at %s took longer than %gs; no feature importances", model_dir, timeout_s)
            return {}
        except OSError as exc:
            log.warning("could not start the importance loader: %s", exc)
            return {}
    if done.returncode != 0:
        log.warning("could not load the model at %s (exit %s): %s", model_dir, done.returncode,
                    done.stderr.decode(errors="replace")[-_STDERR_TAIL:])
        return {}
    try:
        document: Any = json.loads(done.stdout.decode(errors="replace").strip().splitlines()[-1])
        if not document:
            return {}
        return from_model_values([str(n) for n in document["names"]], document["values"])
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        log.warning("unusable importances from the model at %s: %s", model_dir, exc)
        return {}
