"""``calabi``: the command line. Each command is a thin adapter over the services."""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path
from typing import Annotated

import typer

from bootstrap import bootstrap
from registry_store.errors import RegistryError
from settings import Settings

__all__ = ["app", "main"]

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Calabi model registry.")


def _admin_token(data_dir: Path) -> tuple[str, bool]:
    """The first admin's token: CALABI_ADMIN_TOKEN, else the saved one, else a new one."""
    if token := os.environ.get("CALABI_ADMIN_TOKEN"):
        return token, False
    path = data_dir / "admin-token"
    if path.exists():
        return path.read_text().strip(), False
    token = secrets.token_urlsafe(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(token + "\n")
    return token, True


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    data_dir: Annotated[Path | None, typer.Option(help="Data directory (SQLite, artifacts, tokens).")] = None,
    workers: Annotated[int, typer.Option(help="Number of API worker processes.")] = 1,
) -> None:
    """Run the registry server (API and MLflow-compatible routes)."""
    import uvicorn

    if data_dir is not None:
        os.environ["CALABI_DATA_DIR"] = str(data_dir.resolve())
    settings = Settings()
    token, created = _admin_token(settings.data_dir)
    os.environ["CALABI_ADMIN_TOKEN"] = token
    services = bootstrap(settings.model_copy(update={"admin_token": None}), migrate=True)
    services.users.ensure_admin(token)
    services.close()
    if created:
        typer.echo(f"Admin token (shown once, saved to {settings.data_dir / 'admin-token'}): {token}")
    typer.echo(f"Calabi Registry on http://{host}:{port} (data in {settings.data_dir.resolve()})")
    uvicorn.run(
        "api.asgi:app_from_environment", factory=True, host=host, port=port, workers=workers,
        log_level="warning", access_log=False,
    )


def main() -> None:
    """Console-script entry point: domain errors become one line and exit code 1."""
    try:
        app()
    except RegistryError as exc:
        typer.echo(f"error: {exc.error_code}: {exc.message}", err=True)
        sys.exit(1)
