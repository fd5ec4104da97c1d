"""The ASGI app factory uvicorn calls in each API worker process, with the settings ``calabi serve`` gives it."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import FastAPI

from calabi.api.app import create_app
from calabi.bootstrap import build_services
from calabi.settings import Settings

__all__ = ["AppFactory"]


@dataclass(frozen=True)
class AppFactory:
    """Builds the app from ``settings`` in each uvicorn worker (picklable: uvicorn hands it to spawned workers)."""

    settings: Settings

    def __call__(self) -> FastAPI:
        """The app around freshly built services."""
        return create_app(build_services(self.settings))
