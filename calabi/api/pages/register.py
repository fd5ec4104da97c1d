"""Register a model version: pick an existing model or type a new name, give the source, Register.

The seed picks the run's model artifact folder in the Artifacts panel of a run page
(``/ui/runs/…``), whose Register Model button opens this form with ``source`` and ``run_id``
filled in. A source can also be typed: ``runs:/``, ``models:/m-…`` and ``mlflow-artifacts:/``
(through the tracking server), ``s3://`` or a path under an allowed local source root.
"""

from __future__ import annotations

from fastapi import APIRouter, BackgroundTasks, Request, Response
from starlette.concurrency import run_in_threadpool

from calabi.api.pages.versions import version_url
from calabi.api.pages.web import PageRoute, PageUser, PostedForm, SignedIn, page_services, render, see_other
from calabi.bootstrap import Services
from registry_store.errors import RegistryError

__all__ = ["register_router"]

register_router = APIRouter(route_class=PageRoute, include_in_schema=False)
MODEL_CHOICES = 1000
PREFILLED = ("model", "source", "run_id")
"""Fields the query string may fill in (a run page's Register Model link sets source and run_id)."""


def _model_names(services: Services, user: PageUser) -> list[str]:
    page = services.registry.models.search_registered_models(user.actor, max_results=MODEL_CHOICES,
                                                             order_by=["name ASC"])
    return [m.name for m in page.items]


def _page(request: Request, user: PageUser, names: list[str], *, status: int = 200, error: str = "",
          values: dict[str, str] | None = None) -> Response:
    services = page_services(request)
    return render(
        request, "register.html", user=user, status=status, model_names=names, error=error,
        values=values or {key: request.query_params.get(key, "") for key in PREFILLED},
        tracking=services.tracking is not None,
        source_roots=[str(p) for p in services.settings.local_source_roots], nav="register",
    )


@register_router.get("/ui/register", response_model=None)
async def register_form(request: Request, user: SignedIn) -> Response:
    """The registration form."""
    names = await run_in_threadpool(_model_names, page_services(request), user)
    return _page(request, user, names)


@register_router.post("/ui/register", response_model=None)
async def register(request: Request, user: SignedIn, form: PostedForm, background: BackgroundTasks) -> Response:
    """Register the version and open its page; on bad input the form comes back with the message."""
    services = page_services(request)
    values = {key: form.get(key) for key in ("model", "source", "run_id", "description")}
    try:
        version, created = await run_in_threadpool(
            services.registry.registration.register_version, user.actor, name=values["model"].strip(),
            source=values["source"].strip(), run_id=form.optional("run_id"), description=form.optional("description"),
        )
    except RegistryError as exc:
        if exc.http_status in (401, 403):
            raise
        names = await run_in_threadpool(_model_names, services, user)
        return _page(request, user, names, status=exc.http_status, error=exc.message, values=values)
    background.add_task(services.promotions.start_model_evidence, version.name, version.version)
    what = f"Created model {version.name} and registered" if created else "Registered"
    return see_other(request, version_url(version.name, version.version),
                     flash=f"{what} version {version.version}.")
