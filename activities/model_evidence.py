"""The ``compute_model_evidence`` activity: what the checks need from a version's model files, once per digest.

Importances recorded with the artifact (``feature_importances.json``, read at registration) need
no load. Otherwise the evidence stored for the artifact's digest (``registry.model_evidence``) is
reused; only when there is none is the model downloaded into a warm pooled loader
(``activities.loader_pool``), checked against its digest, loaded in the sandbox, and the answer
stored. Runs on the heavy queue and heartbeats while it waits on the loader. Errors: see
``activities.importances`` (a model that cannot be loaded is ``MODEL_UNLOADABLE``; timeouts, limits,
an unreachable artifact store are retried); neither is ever stored nor read as "no importances".
"""

from __future__ import annotations

import importlib.util
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path

from temporalio import activity
from temporalio.exceptions import CancelledError

from activities.errors import domain_errors
from activities.importances import LOADER_VERSION, ModelImportances, model_importances
from activities.loader_pool import LoaderPool
from activities.sandbox import SandboxUnavailableError
from registry_store.artifacts import ArtifactStore, read_model_metadata, tree_digest
from registry_store.audit import Actor
from registry_store.entities import ModelEvidence, ModelVersion
from registry_store.errors import ArtifactIntegrityError, UnavailableError
from registry_store.service import RegistryService
from registry_store.users import ROLES
from workflows.models import ModelEvidenceInput

__all__ = ["SKLEARN_FLAVOR", "ModelEvidenceActivities", "evidence_actor", "recorded_importances"]

SKLEARN_FLAVOR = "sklearn"
_TICK_S = 2.0


def evidence_actor() -> Actor:
    """The audit actor of the current workflow's changes (inside an activity): ``workflow:<workflow id>``."""
    return Actor(name=f"workflow:{activity.info().workflow_id}", roles=frozenset(ROLES))


def recorded_importances(mv: ModelVersion) -> dict[str, float]:
    """The importances recorded with the artifact (``feature_importances.json``), if any."""
    values = mv.evidence.get("feature_importances")
    if not isinstance(values, dict):
        return {}
    return {str(k): float(v) for k, v in values.items() if isinstance(v, int | float) and not isinstance(v, bool)}


class _NotSklearn(Exception):
    """The artifact's MLmodel has no sklearn flavor (found after downloading it)."""

    def __init__(self, flavors: list[str]) -> None:
        super().__init__(", ".join(flavors))
        self.flavors = flavors


class ModelEvidenceActivities:
    """Computes and stores model evidence through a pool of warm sandboxed loaders."""

    def __init__(self, registry: RegistryService, artifacts: ArtifactStore, pool: LoaderPool) -> None:
        self._registry = registry
        self._artifacts = artifacts
        self.pool = pool
        self._inflight: dict[str, Future[ModelEvidence]] = {}
        self._inflight_lock = threading.Lock()

    @activity.defn(name="compute_model_evidence")
    @domain_errors
    def compute_model_evidence(self, request: ModelEvidenceInput) -> str:
        """Make sure the version's model evidence is stored; returns its importance source (recorded, model, none)."""
        actor = evidence_actor()
        mv = self._registry.versions.get_model_version(actor, name=request.model, version=request.version)
        if recorded_importances(mv):
            return "recorded"
        return self.evidence_of(actor, mv).source

    def evidence_of(self, actor: Actor, mv: ModelVersion) -> ModelEvidence:
        """The stored evidence of ``mv``'s artifact digest, computed and stored first when there is none.

        Requests for a digest this worker is computing already wait for that computation rather than
        load the model again (a saving only: the store keeps one answer per digest whoever computes it).
        """
        stored = self._registry.model_evidence.get_model_evidence(actor, mv.digest, loader_version=LOADER_VERSION)
        if stored is not None:
            return stored
        with self._inflight_lock:
            running = self._inflight.get(mv.digest)
            if running is None:
                mine: Future[ModelEvidence] = Future()
                self._inflight[mv.digest] = mine
        if running is not None:
            return _awaited(running)
        try:
            mine.set_result(self._compute(actor, mv))
        except BaseException as exc:
            mine.set_exception(exc)
        finally:
            with self._inflight_lock:
                del self._inflight[mv.digest]
        return mine.result()

    def _compute(self, actor: Actor, mv: ModelVersion) -> ModelEvidence:
        """Load the model (unless its flavors say it is no sklearn model) and store what it exposes."""
        recorded = mv.evidence.get("flavors")
        flavors = [str(f) for f in recorded] if isinstance(recorded, list) else None
        if flavors is not None and SKLEARN_FLAVOR not in flavors:
            found = ModelImportances(source="none", note=_not_sklearn(flavors))
        else:
            found, flavors = self._load(mv)
        return self._registry.model_evidence.record_model_evidence(
            actor, model=mv.name, version=mv.version, importances_source=found.source,
            importances=found.importances, scale_dependent=found.scale_dependent, note=found.note,
            flavors=flavors, loader_version=LOADER_VERSION,
        )

    def _load(self, mv: ModelVersion) -> tuple[ModelImportances, list[str]]:
        """Load the artifact's model in a pooled loader (the answer, and the MLmodel's flavors)."""
        if importlib.util.find_spec("mlflow") is None:
            raise SandboxUnavailableError("mlflow is not installed on this worker: no model can be loaded here")
        flavors: list[str] = []

        def fill(directory: Path) -> None:
            _heartbeat()
            try:
                self._artifacts.download_tree(mv.storage_location, directory, _every_few_seconds(_heartbeat))
            except OSError as exc:
                raise UnavailableError(f"could not download {mv.storage_location}: {exc}") from exc
            _heartbeat()
            if (found := tree_digest(directory)) != mv.digest:
                raise ArtifactIntegrityError(
                    f"The registry's copy at {mv.storage_location} does not match the digest recorded at "
                    f"registration ({mv.digest}, found {found}); it was not loaded")
            flavors.extend(read_model_metadata(directory).flavors)
            if SKLEARN_FLAVOR not in flavors:
                raise _NotSklearn(flavors)

        try:
            return model_importances(self.pool, fill, tick=_heartbeat), flavors
        except _NotSklearn as exc:
            return ModelImportances(source="none", note=_not_sklearn(exc.flavors)), exc.flavors


def _not_sklearn(flavors: list[str]) -> str:
    return f"not an sklearn model; its flavors: {', '.join(flavors) or 'none'}"


def _awaited(running: Future[ModelEvidence]) -> ModelEvidence:
    """The result of another thread's computation of the same digest, heartbeating meanwhile."""
    while True:
        _heartbeat()
        try:
            return running.result(timeout=_TICK_S)
        except TimeoutError:
            continue


def _every_few_seconds(tick: Callable[[], None]) -> Callable[[int], None]:
    """A download progress callback that calls ``tick`` at most every couple of seconds."""
    last = time.monotonic()

    def progress(_written: int) -> None:
        nonlocal last
        if time.monotonic() - last >= _TICK_S:
            last = time.monotonic()
            tick()

    return progress


def _heartbeat() -> None:
    """Heartbeat while waiting on the loader (outside an activity: nothing); a cancellation stops the wait."""
    if not activity.in_activity():
        return
    activity.heartbeat()
    if activity.is_cancelled():
        raise CancelledError("the model evidence computation was cancelled")
