"""What the fault tests share: a registry with its own Temporal dev server, workers as real processes, and
the checks that a promotion was applied exactly once.

The test process plays the API: it opens promotions and delivers decisions through the real
``PromotionService`` over its own ``Services`` (the same database the workers use), and reads the
read model, the audit log and the notification outbox through ``RegistryService``. The workers and
the Temporal dev server are separate processes the tests kill with SIGKILL.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from calabi.bootstrap import Services, build_services, prepare
from calabi.processes import child_environment, die_with_parent, start_dev_server
from calabi.settings import Settings
from policies.loading import load_policy
from policies.status import PromotionStatus
from registry_store.audit import Actor
from registry_store.entities import AuditEvent, Promotion
from registry_store.errors import ConflictError, UnavailableError
from tests.faults.gated_worker import GATES_VARIABLE, Gate, write_gates
from tests.fixtures.servers import free_port

REPO = Path(__file__).resolve().parents[2]
RESUME_S = 180.0
"""Bound on a promotion's recovery after a kill: a lost activity is retried once its start-to-close timeout
(15 s; the evidence snapshot's still 60 s) or the test run's heartbeat timeout (10 s) has passed."""
STEP_S = 60.0
"""Bound on reaching a status (or a gate) while nothing is being killed."""
POLL_S = 0.1
DESCRIPTION = "Churn classifier trained on customer snapshots from 2024-01-01 to 2025-06-30; holdout auc 0.91."
POLICY = """
schema_version = 1

[production.tests]
mode = "attestation"
attestation_tag = "ci.tests_passed"

[production.description]
require_date_range = true
required_metrics = ["auc"]

[production.sign_off]
approvers = 1
role = "approver"
exclude_requester = true
reminder_every = "1d"
expires_after = "7d"

[staging.tests]
mode = "attestation"

[rollback.sign_off]
approvers = 1
"""
HELD_TEST = (
    "import os, time\n"
    "open('/scratch/started', 'w').close()\n"
    "deadline = time.monotonic() + 300\n"
    "while not os.path.exists('/scratch/go') and time.monotonic() < deadline:\n"
    "    time.sleep(0.05)\n"
    "print('1 passed')\n"
)
"""A test command that runs until the test writes ``go`` into its scratch directory (bounded)."""


def held_test_policy(marker: str) -> str:
    """A per-model override whose test command is ``HELD_TEST`` (``marker`` names its processes)."""
    command = json.dumps([sys.executable, "-c", HELD_TEST, marker])
    return f"[production.tests]\nmode = \"command\"\ncommand = {command}\ntimeout_s = 300\n"


def processes_with(marker: str) -> list[int]:
    """Pids of the live processes whose command line holds ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker.encode() in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


def kill(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL ``process`` and reap it."""
    if process.poll() is None:
        process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)


async def until(condition: Callable[[], Awaitable[bool]] | Callable[[], bool], what: str, *,
                timeout: float = STEP_S) -> float:
    """Wait (bounded) until ``condition()`` holds; the seconds it took."""
    started = time.monotonic()
    while True:
        held = condition()
        if isinstance(held, Awaitable):
            held = await held
        if held:
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            pytest.fail(f"{what}: not reached within {timeout:.0f} s")
        await asyncio.sleep(POLL_S)  # polling a condition with a deadline


@dataclass
class Engine:
    """A registry (SQLite or PostgreSQL), its Temporal dev server and the workers the test started."""

    root: Path
    settings: Settings
    services: Services
    admin: Actor
    requester: Actor
    approver: Actor
    temporal_port: int
    dev_server: subprocess.Popen[bytes] | None = None
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @classmethod
    def create(cls, root: Path, database_url: str) -> Engine:
        """Prepare the registry, start the dev server and seed a requester and an approver."""
        policy_dir = root / "policies"
        (policy_dir / "models").mkdir(parents=True)
        (policy_dir / "default.toml").write_text(POLICY)
        load_policy(policy_dir, "any")  # a broken policy fails here, not in every activity
        (root / "sources").mkdir()
        token, port = secrets.token_urlsafe(24), free_port()
        settings = Settings(
            data_dir=root / "data", database_url=database_url, artifact_root=str(root / "artifacts"),
            local_source_roots=[root / "sources"], admin_token=SecretStr(token), policy_dir=policy_dir,
            temporal_address=f"127.0.0.1:{port}", temporal_task_queue=f"faults-{secrets.token_hex(4)}",
        )
        prepare(settings)
        settings = settings.model_copy(update={"admin_token": None})
        services = build_services(settings)
        admin = services.users.authenticate(token)

        def user(prefix: str, *roles: str) -> Actor:
            _, issued = services.users.create_user(admin, name=f"{prefix}-{secrets.token_hex(3)}", roles=list(roles))
            return services.users.authenticate(issued)

        engine = cls(root=root, settings=settings, services=services, admin=admin,
                     requester=user("ml-engineer", "engineer"), approver=user("ds-lead", "approver"),
                     temporal_port=port)
        engine.start_dev_server()
        return engine

    # -- processes

    def start_dev_server(self) -> None:
        """Start (or start again) the Temporal dev server on the same port and database file."""
        self.dev_server = start_dev_server(self.root / "temporal", port=self.temporal_port,
                                           log_path=self.root / "temporal.log")
        self.processes.append(self.dev_server)

    def start_worker(self, name: str, gates: Iterable[Gate] = ()) -> subprocess.Popen[bytes]:
        """Start ``python -m worker`` (with ``gates``: the same worker holding those activities).

        ``TMPDIR`` is ``<root>/<name>``, so the test can find the scratch directories of its test runs.
        """
        tmp = self.root / name
        tmp.mkdir()
        env = child_environment(self.settings) | {"TMPDIR": str(tmp), "PYTHONPATH": str(REPO)}
        module = "worker"
        gates = list(gates)
        if gates:
            write_gates(tmp / "gates.json", self.markers, gates)
            env[GATES_VARIABLE], module = str(tmp / "gates.json"), "tests.faults.gated_worker"
        with (self.root / f"{name}.log").open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", module], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, preexec_fn=die_with_parent,
            )
        self.processes.append(process)
        return process

    @property
    def kind(self) -> str:
        """``sqlite`` or ``postgresql``: the registry's database."""
        return self.settings.resolved_database_url().split(":")[0].split("+")[0]

    @property
    def markers(self) -> Path:
        """Where gated workers mark the activities they hold."""
        path = self.root / "markers"
        path.mkdir(exist_ok=True)
        return path

    def release_test_runs(self, worker: str) -> None:
        """Let the held test commands of worker ``worker`` finish (write ``go`` into their scratch directories)."""
        for scratch in (self.root / worker).glob("calabi-tests-*/scratch"):
            try:
                (scratch / "go").touch()
            except OSError:  # the run ended and its directory went away meanwhile
                pass

    def running_test_runs(self, worker: str) -> int:
        """How many test commands of worker ``worker`` have started."""
        return len(list((self.root / worker).glob("calabi-tests-*/scratch/started")))

    def close(self) -> None:
        """Kill every process the test started, release the database."""
        for process in reversed(self.processes):
            kill(process)
        self.services.close()

    # -- registry

    def register(self, model: str) -> None:
        """``model`` with v1 in Production (admin break-glass) and v2, the candidate, in Staging."""
        self.services.registry.models.create_registered_model(self.requester, name=model, description="churn")
        self.add_version(model)
        self.services.registry.stages.transition_stage(self.admin, name=model, version=1, stage="Production")
        self.add_version(model, stage="Staging")

    def add_version(self, model: str, *, stage: str | None = None) -> int:
        """Register a tiny artifact as the next version of ``model`` (moved to ``stage``); its number."""
        source = self.root / "sources" / f"model-{secrets.token_hex(4)}"
        source.mkdir()
        (source / "MLmodel").write_text("artifact_path: model\nflavors:\n  python_function: {}\n")
        (source / "model.pkl").write_bytes(secrets.token_bytes(64))
        registry = self.services.registry
        number = registry.registration.create_model_version(
            self.requester, name=model, source=str(source), tags=[("ci.tests_passed", "true")],
            description=DESCRIPTION).version
        if stage is not None:
            registry.stages.transition_stage(self.requester, name=model, version=number, stage=stage)
        return int(number)

    def override_policy(self, model: str, text: str) -> None:
        """Write ``models/<model>.toml`` of the policy directory."""
        (self.settings.resolved_policy_dir() / "models" / f"{model}.toml").write_text(text)

    async def request(self, model: str, version: int = 2) -> Promotion:
        """Request the promotion of ``model`` ``version`` to Production through ``PromotionService``."""
        promotion: Promotion = await self.services.promotions.request(
            self.requester, model=model, version=version, target_stage="Production",
            justification="beats Production on auc")
        return promotion

    async def signed_off(self, promotion: Promotion) -> bool:
        """Sign ``promotion`` off; False (try again) while Temporal does not answer in time.

        A sign-off whose answer was lost may have landed: the retry's "already signed off", or a refusal because
        the promotion has moved on with this approver's sign-off recorded, means done.
        """
        try:
            await self.services.promotions.decide(self.approver, promotion.id, "sign_off", "looks good")
        except UnavailableError:
            return False
        except ConflictError as exc:
            landed = any(a.get("user") == self.approver.name for a in self.read(promotion).approvals)
            if "already signed off" not in exc.message and not landed:
                raise
        return True

    def read(self, promotion: Promotion) -> Promotion:
        """The read model of ``promotion``."""
        found: Promotion = self.services.registry.promotions.get_promotion(self.admin, promotion.id)
        return found

    def has_status(self, promotion: Promotion, status: PromotionStatus) -> bool:
        return self.read(promotion).status == status

    async def promotions_awaiting_sign_off(self, prefix: str, count: int) -> list[Promotion]:
        """``count`` new models' promotions, requested at once on worker ``w1``, each idle awaiting sign-off."""
        tag = secrets.token_hex(3)
        models = [f"{prefix}-{n}-{tag}" for n in range(count)]
        for model in models:
            self.register(model)
        self.start_worker("w1")
        promotions = await asyncio.gather(*(self.request(model) for model in models))
        for promotion in promotions:
            await until(lambda p=promotion: self.idle_awaiting_sign_off(p), f"{promotion.model_name} awaiting sign-off")
        return list(promotions)

    async def idle_awaiting_sign_off(self, promotion: Promotion) -> bool:
        """Whether ``promotion`` waits for sign-off with nothing in flight (its "awaiting" notice recorded)."""
        if not self.has_status(promotion, PromotionStatus.AWAITING_SIGN_OFF):
            return False
        client = await self.services.promotions.client()
        description = await client.get_workflow_handle(promotion.workflow_id).describe()
        return not description.raw_description.pending_activities and any(
            n.kind == "awaiting" for n in self.services.registry.notifications.list_notifications(
                self.admin, promotion_id=promotion.id))

    def exactly_once_problems(self, promotions: Iterable[Promotion]) -> dict[str, list[str]]:
        """``applied_once_problems`` of each promotion (only those with any), plus the audit chain and live rows."""
        problems = {p.model_name: found for p in promotions
                    if (found := applied_once_problems(self.services, self.admin, p))}
        if (broken := audit_chain_problem(self.services, self.admin)) is not None:
            problems["audit verify"] = [broken]
        if stuck := live_rows(self.services, self.admin):
            problems["live promotions left"] = stuck
        return problems


def _after(event: AuditEvent) -> dict[str, Any]:
    return event.after if isinstance(event.after, dict) else {}


def applied_once_problems(services: Services, actor: Actor, promotion: Promotion) -> list[str]:
    """Everything that says ``promotion`` was not applied exactly once (empty: it was).

    One stage move of the candidate into Production (the incumbent archived by it); one of each of the
    apply's audit events; one audited sign-off; one read-model event per status; one notification per kind;
    one Production stint of the candidate.
    """
    model, problems = promotion.model_name, []
    registry = services.registry
    read = registry.promotions.get_promotion(actor, promotion.id)
    if read.status != PromotionStatus.PROMOTED or read.live:
        problems.append(f"read model is {read.status} (live={read.live}): {read.message}")
    stages = {v: registry.versions.get_model_version(actor, name=model, version=v).current_stage for v in (1, 2)}
    if stages != {1: "Archived", 2: "Production"}:
        problems.append(f"stages {stages}")
    events = registry.audit.list_audit_events(actor, model_name=model, limit=10_000)
    moves = Counter((e.version, (e.before or {}).get("stage"), _after(e).get("stage"))
                    for e in events if e.action == "transition_stage")
    if moves != Counter({(1, "None", "Production"): 1, (2, "None", "Staging"): 1, (2, "Staging", "Production"): 1}):
        problems.append(f"stage moves {dict(moves)}")
    # Model evidence is stored once per artifact digest, by the promotion or by registration's background workflow.
    evidence = Counter(e.after.get("digest") for e in events if e.action == "record_model_evidence")
    if not evidence or set(evidence.values()) != {1}:
        problems.append(f"model evidence events per digest {dict(evidence)}")
    by_workflow = Counter(e.action for e in events if e.actor.startswith("workflow:")
                          and e.action not in ("promotion_state", "record_model_evidence"))
    if by_workflow != Counter({"bind_promotion_evidence": 1, "transition_stage": 1,
                               "set_alias": 1, "update_model_version": 1, "set_model_version_tag": 2}):
        problems.append(f"the workflow's audit events {dict(by_workflow)}")
    signed = [e for e in events if e.action == "sign_off_promotion"]
    if len(signed) != 1:
        problems.append(f"{len(signed)} audited sign-offs")
    statuses = Counter(_after(e)["status"] for e in events if e.action == "promotion_state" and "status" in _after(e))
    if any(count != 1 for count in statuses.values()) or PromotionStatus.PROMOTED not in statuses:
        problems.append(f"read-model status events {dict(statuses)}")
    stints = [s for s in registry.production.production_history(actor, model).stints if s.version == 2]
    if len(stints) != 1:
        problems.append(f"{len(stints)} Production stints of v2")
    outbox = registry.notifications.list_notifications(actor, promotion_id=promotion.id, limit=1000)
    kinds = Counter(n.kind for n in outbox)
    if kinds != Counter({"requested": 1, "awaiting": 1, "promoted": 1}):
        problems.append(f"notifications {dict(kinds)}")
    return problems


def audit_chain_problem(services: Services, actor: Actor) -> str | None:
    """Why ``audit verify`` fails (None: the chain verifies, against the data dir's anchor)."""
    result = services.registry.audit.verify_audit_chain(actor, services.audit_anchor)
    return None if result.ok else f"audit chain broken at seq {result.first_bad_seq}: {result.problem}"


def live_rows(services: Services, actor: Actor) -> list[str]:
    """Promotions the read model still holds live (a version that cannot be promoted again)."""
    page = services.registry.promotions.list_promotions(actor, max_results=1000)
    return [f"{p.model_name} v{p.version}: {p.status}" for p in page.items if p.live]
