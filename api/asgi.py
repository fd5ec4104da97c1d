"""ASGI entry point for uvicorn workers: settings from the environment, built at start-up."""

from __future__ import annotations

from fastapi import FastAPI

from api.app import create_app
from bootstrap import bootstrap
from settings import Settings

__all__ = ["app_from_environment"]


def app_from_environment() -> FastAPI:
    """Build the app in a worker process (``uvicorn --factory api.asgi:app_from_environment``)."""
    return create_app(bootstrap(Settings(), migrate=False))
