"""``POST /api/v1/models/{name}/versions/upload``: register a version from files on the caller's machine.

The body is an uncompressed tar stream (``application/x-tar``). The server receives it into a
staging directory it chooses (bounded in size), unpacks only regular files and directories
(absolute paths, ``..``, links and devices are refused), then registers the tree through the
registry's own registration path, which copies it into the artifact store and digests it.
Nothing stays behind when anything fails.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Query, Request
from pydantic import TypeAdapter, ValidationError
from starlette.concurrency import run_in_threadpool

from calabi.api.deps import CurrentActor, ServicesDep
from registry_store.artifacts.uploads import unpack_tar
from registry_store.entities import ModelVersion
from registry_store.errors import InvalidParameterError
from registry_store.users import require_role

__all__ = ["MAX_UPLOAD_BYTES", "TAR_CONTENT_TYPE", "upload_router"]

upload_router = APIRouter(prefix="/api/v1", tags=["registry"])

TAR_CONTENT_TYPE = "application/x-tar"
MAX_UPLOAD_BYTES = 16 * 1024**3
"""The largest tar stream accepted (and so the largest tree it can unpack to)."""
_TAGS = TypeAdapter(dict[str, str])


@upload_router.post(
    "/models/{name}/versions/upload", response_model=ModelVersion, status_code=201,
    openapi_extra={"requestBody": {"required": True, "content": {
        TAR_CONTENT_TYPE: {"schema": {"type": "string", "format": "binary"}}}}},
)
async def upload_version(
    request: Request, services: ServicesDep, actor: CurrentActor, name: str, background: BackgroundTasks,
    filename: Annotated[str, Query(description="What the version's source records: upload:<filename>.")] = "model",
    run_id: str | None = None, description: str | None = None,
    tags: Annotated[str | None, Query(description='Tags as a JSON object, e.g. {"team": "ml"}.')] = None,
) -> ModelVersion:
    """Register the uploaded tar stream as the model's next version."""
    require_role(actor, "engineer", "register model versions")  # before receiving anything
    content_type = request.headers.get("content-type", "").split(";")[0].strip()
    if content_type != TAR_CONTENT_TYPE:
        raise InvalidParameterError(f"an upload must be sent as {TAR_CONTENT_TYPE}, not '{content_type or 'nothing'}'")
    label = _label(filename)
    tag_map = _tags(tags)
    await run_in_threadpool(services.registry.models.get_registered_model, actor, name)  # fail fast: no such model
    cleanup = ExitStack()  # the staging directory is made and removed off the event loop
    try:
        work: Path = await run_in_threadpool(cleanup.enter_context, services.artifacts.staging())
        archive = work / "upload.tar"
        await _receive(request, archive)
        tree = work / "tree"
        await run_in_threadpool(unpack_tar, archive, tree)
        archive.unlink()
        created: ModelVersion = await run_in_threadpool(
            lambda: services.registry.registration.create_model_version(
                actor, name=name, source=f"upload:{label}", run_id=run_id, description=description,
                tags=list(tag_map.items()), upload=tree,
            )
        )
        background.add_task(services.promotions.start_model_evidence, created.name, created.version)
        return created
    finally:
        await run_in_threadpool(cleanup.close)


async def _receive(request: Request, archive: Path) -> None:
    """Write the request body to ``archive``, refusing more than ``MAX_UPLOAD_BYTES``."""
    received = 0
    with archive.open("xb") as out:
        async for chunk in request.stream():
            received += len(chunk)
            if received > MAX_UPLOAD_BYTES:
                raise InvalidParameterError(f"the upload is larger than {MAX_UPLOAD_BYTES} bytes")
            await run_in_threadpool(out.write, chunk)
    if not received:
        raise InvalidParameterError("the upload is empty: send a tar stream of the model's files")


def _label(filename: str) -> str:
    """The uploaded tree's name (one path segment), recorded in the version's source."""
    if not filename or "/" in filename or filename in (".", "..") or len(filename) > 200 or not filename.isprintable():
        raise InvalidParameterError(f"invalid upload filename {filename!r}: one printable path segment expected")
    return filename


def _tags(raw: str | None) -> dict[str, str]:
    if raw is None:
        return {}
    try:
        return _TAGS.validate_json(raw)
    except ValidationError as exc:
        raise InvalidParameterError(f"tags must be a JSON object of strings: {exc.errors()[0]['msg']}") from None
