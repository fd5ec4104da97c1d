"""``calabi backup``, ``calabi restore`` and ``calabi verify-store``: the operator's commands on the server's own
settings (``CALABI_*``, like ``serve``), its database and artifact store. Server code loads only when one runs.

The work is in ``registry_store/backup.py``, ``registry_store/restore.py`` and
``registry_store/store_verification.py``; these commands print and choose the exit code.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from calabi.settings import Settings

__all__ = ["backup", "restore", "verify_store"]

_DATA_DIR_HELP = "Data directory (default: CALABI_DATA_DIR)."


def _settings(data_dir: Path | None) -> Settings:
    settings = Settings() if data_dir is None else Settings(data_dir=Path(data_dir))
    return settings.model_copy(update={"data_dir": settings.data_dir.resolve()})


def backup(
    out: Annotated[Path, typer.Option("--out", help="New directory to write the backup into (must not exist).")],
    data_dir: Annotated[Path | None, typer.Option(help=_DATA_DIR_HELP)] = None,
) -> None:
    """Back up the registry while it serves: database snapshot, artifact manifest and copies, audit head."""
    from calabi.bootstrap import build_services
    from registry_store.backup import take_backup

    os.umask(0o077)  # the backup holds the server key and the database
    settings = _settings(data_dir)
    services = build_services(settings)
    try:
        info = take_backup(services.db, services.artifacts, settings.data_dir, out)
    finally:
        services.close()
    counts = info.counts
    typer.echo(f"backup written to {out.absolute()}: {counts.models} model(s), {counts.versions} version(s), "
               f"{counts.files} file(s), audit head {info.audit_head.seq}, schema {info.schema_revision}")
    if info.artifacts.advice:
        typer.echo(info.artifacts.advice)
    if info.integrity_problems:
        for problem in info.integrity_problems:
            typer.echo(f"error: DATA_LOSS: {problem.describe()}", err=True)
        typer.echo("error: DATA_LOSS: the backup is complete but holds damaged files (above); run calabi verify-store",
                   err=True)
        raise SystemExit(1)


def restore(
    source: Annotated[Path, typer.Argument(help="A directory written by 'calabi backup'.")],
    data_dir: Annotated[Path | None, typer.Option(help=_DATA_DIR_HELP)] = None,
) -> None:
    """Restore a backup into an empty data dir, database and artifact store, then verify the audit chain."""
    from calabi.bootstrap import build_services, now_ms
    from registry_store.restore import restore_backup

    os.umask(0o077)
    settings = _settings(data_dir)
    services = build_services(settings)
    try:
        report = restore_backup(source, services.db, services.artifacts, settings.data_dir, clock=now_ms)
    finally:
        services.close()
    info = report.info
    moved = f"; {report.relocated_versions} version(s) now stored below {settings.resolved_artifact_root()}" \
        if report.relocated_versions else ""
    typer.echo(f"restored the backup of {info.created_at}: {info.counts.versions} version(s); the audit chain "
               f"verifies ({report.audit_events_checked} events, head {info.audit_head.seq} as backed up){moved}; "
               f"restore recorded as audit event {report.restore_event_seq}")
    for problem in info.integrity_problems:
        typer.echo(f"warning: damaged when backed up, restored as found: {problem.describe()}", err=True)
    typer.echo("next: calabi verify-store")


def verify_store(
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    data_dir: Annotated[Path | None, typer.Option(help=_DATA_DIR_HELP)] = None,
) -> None:
    """Check every version's files against the digests recorded at registration; list orphaned trees.

    Exits 1 when a recorded file is missing, extra or different (orphans alone do not fail).
    """
    from calabi.bootstrap import build_services
    from registry_store.store_verification import verify_store as check_store

    services = build_services(_settings(data_dir))
    try:
        report = check_store(services.db, services.artifacts)
    finally:
        services.close()
    if as_json:
        typer.echo(json.dumps(report.as_json(), indent=2))
    else:
        for problem in report.problems:
            where = f" file '{problem.file}'" if problem.file else ""
            typer.echo(f"DATA_LOSS: {problem.model} version {problem.version}{where}: {problem.problem}")
        for orphan in report.orphans:
            typer.echo(f"orphan: {orphan.location} (model directory '{orphan.model}'; no version records it)")
        typer.echo(f"{report.versions_checked} version(s), {report.files_checked} file(s), "
                   f"{report.bytes_checked} bytes checked: {len(report.problems)} problem(s), "
                   f"{len(report.orphans)} orphan(s)")
    if not report.ok:
        raise SystemExit(1)

