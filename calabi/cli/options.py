"""Options shared by the command groups."""

from __future__ import annotations

from typing import Annotated

import typer

__all__ = ["JsonOpt", "TagOpt", "YesOpt", "parse_tags"]

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]
TagOpt = Annotated[list[str] | None, typer.Option("--tag", help="A tag KEY=VALUE (repeatable).", show_default=False)]


def parse_tags(values: list[str] | None) -> dict[str, str]:
    """``--tag KEY=VALUE`` options as a mapping (a usage error without ``=``)."""
    tags: dict[str, str] = {}
    for value in values or []:
        key, sep, tag_value = value.partition("=")
        if not sep:
            raise typer.BadParameter(f"expected KEY=VALUE, got {value!r}", param_hint="'--tag'")
        tags[key] = tag_value
    return tags
