"""The ASGI app factory uvicorn calls in each API worker process, with the settings ``calabi serve`` gives it."""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass

from fastapi import FastAPI

from calabi.api.app import create_app
from calabi.bootstrap import build_services
from calabi.linux_process import die_with_parent
from calabi.logs import use_json_logs
from calabi.settings import Settings
from calabi.tracing import start_tracing

__all__ = ["AppFactory"]


@dataclass(frozen=True)
class AppFactory:
    """Builds the app from ``settings`` in each uvicorn worker (picklable: uvicorn hands it to spawned workers)."""

    settings: Settings
    parent_pid: int | None = None
    """Set when uvicorn runs the app in worker processes of ``calabi serve`` (pid ``parent_pid``): each
    then dies at once with it, even when it is killed with SIGKILL."""

    def __call__(self) -> FastAPI:
        """The app around freshly built services."""
        if self.parent_pid is not None:
            die_with_parent(signal.SIGKILL)  # SIGTERM would let a stalled upload keep the process (and port) alive
            if os.getppid() != self.parent_pid:  # serve died before the death signal was armed
                raise SystemExit(1)
        if self.settings.log_format == "json":  # in each worker process: spawned ones start unconfigured
            use_json_logs()
        start_tracing("calabi-api")
        return create_app(build_services(self.settings))
