"""``calabi serving-schema``: the live serving schema promotions check signatures against."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from calabi.cli import output as out
from calabi.cli.context import api
from calabi.cli.http import ApiError, segment
from calabi.cli.options import JsonOpt
from calabi.cli.promotion_tables import schema_table
from policies.evidence import SignatureSchema

__all__ = ["serving_schema_app"]

serving_schema_app = typer.Typer(
    no_args_is_help=True, help="The live serving schema that promotions check signatures against."
)

MLMODEL_FILE = "MLmodel"
_MAX_MLMODEL_BYTES = 16 * 1024 * 1024


@serving_schema_app.command("set")
def serving_schema_set(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="Registered model name.")],
    source: Annotated[
        str,
        typer.Argument(
            help="MLflow signature JSON, a file holding it, an MLmodel file or a model directory, or - for stdin.",
            show_default=False,
        ),
    ],
) -> None:
    """Set the live serving schema promotions are checked against."""
    signature = _signature_text(source)
    api(ctx).put(f"/models/{segment(model)}/serving-schema", {"signature": signature})
    typer.echo(f"Serving schema of '{model}' set.")


@serving_schema_app.command("show")
def serving_schema_show(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="Registered model name.")],
    as_json: JsonOpt = False,
) -> None:
    """Show a model's live serving schema."""
    signature: str = api(ctx).get(f"/models/{segment(model)}/serving-schema")["signature"]
    if as_json:
        out.emit_json({"model": model, "signature": signature})
        return
    try:
        schema = SignatureSchema.from_mlflow_json(signature)
    except ValueError:
        schema = None
    if schema is None:
        typer.echo(signature)
    else:
        out.print_rich(schema_table(model, schema))


def _bad(message: str) -> ApiError:
    return ApiError("INVALID_PARAMETER_VALUE", message)


def _signature_text(source: str) -> str:
    """The signature JSON named by ``source`` (inline, ``-``, a JSON file, an MLmodel file or a model dir)."""
    if source.lstrip().startswith("{"):
        return source
    if source == "-":
        return sys.stdin.read()
    path = Path(source)
    try:
        if path.is_dir() or path.name == MLMODEL_FILE:
            return _mlmodel_signature(path / MLMODEL_FILE if path.is_dir() else path)
        return path.read_text()
    except OSError as exc:
        raise _bad(f"cannot read the serving schema from {source}: {exc.strerror or exc}") from exc


def _mlmodel_signature(mlmodel: Path) -> str:
    """The ``signature`` mapping of an MLmodel file as JSON (the server validates it)."""
    import yaml  # only this command reads YAML

    if mlmodel.stat().st_size > _MAX_MLMODEL_BYTES:
        raise _bad(f"{mlmodel} is larger than {_MAX_MLMODEL_BYTES} bytes")
    try:
        document = yaml.safe_load(mlmodel.read_bytes())
    except yaml.YAMLError as exc:
        raise _bad(f"{mlmodel} is not valid YAML: {out.one_line(str(exc))}") from None
    signature = document.get("signature") if isinstance(document, dict) else None
    if not isinstance(signature, dict) or not signature:
        raise _bad(f"{mlmodel.parent} has no MLmodel with a model signature.")
    return json.dumps(signature, sort_keys=True, separators=(",", ":"), default=str)
