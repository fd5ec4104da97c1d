"""Feature importances computed from a candidate's sklearn model, in the sandbox.

Loading an MLflow sklearn model deserializes it (pickle, cloudpickle, or skops with an
allow-list the artifact itself declares), which can run code shipped with the artifact or
crash the interpreter. So ``_importances_child.py`` loads it in ``activities.sandbox`` (no
secrets, database, data dir, other process or network; CPU, memory and ``timeout_s`` limits)
and prints the raw values as JSON, read back as size-bounded data.

A model that fails to load means "no importances" (logged): the leakage check then fails
with its own reason. A model that runs past the time or CPU limit is a ``SandboxLimitError``,
and a sandbox that cannot start a ``SandboxUnavailableError``: check errors, never verdicts.
Without a sandbox the model is never loaded.
"""

from __future__ import annotations

import json
import logging
import math
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from activities.sandbox import CANDIDATE_DIR, SCRATCH_DIR, Limits, SandboxLimitError, spawn, tail
from policies.importances import from_model_values

__all__ = ["IMPORTANCES_TIMEOUT_S", "model_importances"]

log = logging.getLogger(__name__)
IMPORTANCES_TIMEOUT_S = 30.0
_CHILD = Path(__file__).with_name("_importances_child.py")
_STDERR_TAIL = 2000
_OUTPUT_BYTES = 16 << 20
_KILLED_BY_LIMIT = {128 + signal.SIGXCPU, 128 + signal.SIGKILL}  # bwrap's exit status for a child killed so


def model_importances(model_dir: Path, *, timeout_s: float = IMPORTANCES_TIMEOUT_S) -> dict[str, float]:
    """``{feature: importance}`` of the sklearn model at ``model_dir``; empty when it has none or fails to load."""
    with tempfile.TemporaryDirectory(prefix="calabi-importances-") as tmp:
        stdout_path, stderr_path = Path(tmp) / "stdout", Path(tmp) / "stderr"
        with stdout_path.open("wb") as stdout, stderr_path.open("wb") as stderr:
            sandboxed = spawn(
                [sys.executable, "-I", "-c", _CHILD.read_text(), CANDIDATE_DIR], candidate=model_dir,
                scratch=Path(tmp) / "scratch", stdout=stdout, stderr=stderr, cwd=SCRATCH_DIR,  # not the model's dir
                limits=Limits(cpu_s=math.ceil(timeout_s), file_bytes=_OUTPUT_BYTES),
            )
            try:
                returncode = sandboxed.process.wait(timeout=timeout_s)
                errors = tail(stderr_path, _STDERR_TAIL)
                if returncode != 0:
                    sandboxed.ensure_started(errors)
            except subprocess.TimeoutExpired as exc:
                raise SandboxLimitError(f"loading the model took longer than {timeout_s:g}s") from exc
            finally:
                sandboxed.kill()  # on a timeout or any interruption; nothing to do once it exited
                sandboxed.close()
        if returncode in _KILLED_BY_LIMIT:
            raise SandboxLimitError(f"loading the model was stopped at the sandbox's CPU or memory limit: {errors}")
        if returncode != 0:
            log.warning("could not load the model at %s (exit %s): %s", model_dir, returncode, errors)
            return {}
        return _parsed(stdout_path.read_bytes()[-_OUTPUT_BYTES:], model_dir)


def _parsed(output: bytes, model_dir: Path) -> dict[str, float]:
    """The importances in the child's last output line (untrusted data: any malformed answer means none)."""
    try:
        document: Any = json.loads(output.decode(errors="replace").strip().splitlines()[-1])
        if not document:
            return {}
        return from_model_values([str(n) for n in document["names"]], document["values"])
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        log.warning("unusable importances from the model at %s: %s", model_dir, exc)
        return {}

