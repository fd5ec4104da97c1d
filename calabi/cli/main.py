"""``calabi``: the command line. The root app, its global options and the command groups.

User commands are clients of a Calabi server's HTTP API: ``--url`` (``CALABI_URL``) names the
server and ``--token`` (``CALABI_TOKEN``, else the token ``calabi login URL`` saved) the
caller, so the audit log names the token's user. Only ``serve``, ``worker``, ``backup``, ``restore``
and ``verify-store`` use the server's own settings. Failures print one line, ``error: CODE: message``,
on stderr and exit non-zero.
"""

from __future__ import annotations

from typing import Annotated

import typer

from calabi.cli import output as out
from calabi.cli.aliases import aliases_app
from calabi.cli.audit import audit_app
from calabi.cli.context import Runtime
from calabi.cli.groups import groups_app
from calabi.cli.http import DEFAULT_URL
from calabi.cli.login import login
from calabi.cli.maintenance import backup, restore, verify_store
from calabi.cli.model_grants import grant, grants, restrict, revoke, set_owner, unrestrict
from calabi.cli.models import models_app
from calabi.cli.promotion_status import promotions_app
from calabi.cli.promotions import cancel, promote, recheck, reject, rollback, sign_off
from calabi.cli.reviews import reviews_app
from calabi.cli.serve import serve, worker
from calabi.cli.serving_schema import serving_schema_app
from calabi.cli.tags import tags_app
from calabi.cli.tokens import tokens_app
from calabi.cli.users import users_app
from calabi.cli.versions import versions_app
from calabi.cli.webhooks import webhooks_app

__all__ = ["app", "main"]

app = typer.Typer(
    cls=out.OneLineErrorsGroup, no_args_is_help=True, add_completion=False,
    help="Calabi model registry. Global options go before the command: calabi --url URL --token T models list",
)


@app.callback()
def _root(
    ctx: typer.Context,
    url: Annotated[str, typer.Option(envvar="CALABI_URL", help="The Calabi server.")] = DEFAULT_URL,
    token: Annotated[
        str | None,
        typer.Option(envvar="CALABI_TOKEN", show_envvar=True, show_default=False,
                     help="API token (default: the token 'calabi login URL' saved)."),
    ] = None,
) -> None:
    """Calabi model registry: user commands call the server at --url with --token."""
    ctx.obj = Runtime(url=url, token=token or None)


app.command()(login)
for _group, _name in ((models_app, "models"), (versions_app, "versions"), (aliases_app, "aliases"),
                      (tags_app, "tags"), (audit_app, "audit"), (users_app, "users"),
                      (groups_app, "groups"), (tokens_app, "tokens"), (promotions_app, "promotions"),
                      (serving_schema_app, "serving-schema"), (reviews_app, "reviews"), (webhooks_app, "webhooks")):
    app.add_typer(_group, name=_name)
for _command, _command_name in ((promote, "promote"), (sign_off, "sign-off"), (reject, "reject"),
                                (cancel, "cancel"), (recheck, "recheck"), (rollback, "rollback")):
    app.command(_command_name)(_command)
for _access_command, _access_name in ((grants, "grants"), (grant, "grant"), (revoke, "revoke"),
                                      (set_owner, "set-owner"), (restrict, "restrict"), (unrestrict, "unrestrict")):
    models_app.command(_access_name)(_access_command)
app.command()(serve)
app.command()(worker)
app.command()(backup)
app.command()(restore)
app.command("verify-store")(verify_store)


def main() -> None:
    """Console-script entry point (the root group turns failures into one line and an exit code)."""
    app()
