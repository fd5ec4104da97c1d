"""ASGI entry point for uvicorn workers: settings from the environment, built at start-up."""

from __future__ import annotations

from fastapi import FastAPI

from calabi.api.app import create_app
from calabi.bootstrap import bootstrap
from calabi.settings import Settings

__all__ = ["app_from_environment"]


def app_from_environment() -> FastAPI:
    """Build the app in a worker process (``uvicorn --factory calabi.api.asgi:app_from_environment``)."""
    return create_app(bootstrap(Settings(), migrate=False))
