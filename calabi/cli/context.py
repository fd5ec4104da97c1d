"""How a ``calabi`` command reaches the registry: global options, the services and the authenticated caller.

Shared by the command modules (the root callback stores a :class:`Runtime`;
:func:`connect` builds the services with the server's settings and authenticates the token).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import typer
from pydantic import ValidationError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from calabi.bootstrap import Services, build_services
from calabi.settings import Settings
from registry_store.audit import Actor
from registry_store.errors import InvalidParameterError, UnauthenticatedError, UnavailableError

__all__ = ["Runtime", "caller_token", "connect", "redacted"]


@dataclass
class Runtime:
    """Global options, and the services and caller once a command needs them."""

    data_dir: Path | None
    token: str | None
    services: Services | None = None
    actor: Actor | None = None


def connect(ctx: typer.Context) -> tuple[Services, Actor]:
    """The services (same settings as the server) and the authenticated caller."""
    runtime = ctx.find_object(Runtime)
    assert runtime is not None, "the root callback sets the runtime"
    if runtime.services is not None and runtime.actor is not None:
        return runtime.services, runtime.actor
    try:
        settings = Settings(data_dir=runtime.data_dir) if runtime.data_dir else Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]).upper()
        raise InvalidParameterError(f"invalid setting CALABI_{where}: {first['msg']}") from exc
    token = caller_token(runtime.token, settings)
    sqlite_file = settings.data_dir / "calabi.db"
    if settings.database_url is None and not sqlite_file.exists():
        raise UnavailableError(
            f"no registry database at {sqlite_file.resolve()}: start 'calabi serve' with this data dir once, "
            "or set CALABI_DATA_DIR / --data-dir / CALABI_DATABASE_URL"
        )
    try:
        services = build_services(settings)
        ctx.find_root().call_on_close(services.close)
        actor = services.users.authenticate(token)
    except (SQLAlchemyError, OSError) as exc:
        reason = getattr(exc, "orig", None) or exc
        raise UnavailableError(
            f"cannot use the registry database {redacted(settings.resolved_database_url())}: {reason} "
            "(is it reachable, and has 'calabi serve' created the schema?)"
        ) from exc
    runtime.services, runtime.actor = services, actor
    return services, actor


def caller_token(option: str | None, settings: Settings) -> str:
    """``--token``, else CALABI_TOKEN, else the server's saved admin token in the data dir."""
    if option:
        return option
    if settings.token is not None and settings.token.get_secret_value():
        return settings.token.get_secret_value()
    path = settings.data_dir / "admin-token"
    try:
        saved = path.read_text().strip()
    except OSError:
        saved = ""
    if saved:
        return saved
    raise UnauthenticatedError(
        f"no token: pass --token, set CALABI_TOKEN, or run where {path} is readable (the server's admin token)"
    )


def redacted(url: str) -> str:
    """A database URL with its password hidden."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparsable database URL>"
