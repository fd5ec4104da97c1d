"""The one place where domain errors become Temporal errors.

    RegistryError subclass       ApplicationError.type      non_retryable
    ─────────────────────────    ───────────────────────    ─────────────
    NotFoundError                RESOURCE_DOES_NOT_EXIST    yes
    AlreadyExistsError           RESOURCE_ALREADY_EXISTS    yes
    InvalidParameterError        INVALID_PARAMETER_VALUE    yes
    UnauthenticatedError         UNAUTHENTICATED            yes
    PermissionDeniedError        PERMISSION_DENIED          yes
    ConflictError                RESOURCE_CONFLICT          no (retried)
    StaleEvidenceError           ABORTED                    yes (the workflow re-runs the checks)
    InvalidStateError            INVALID_STATE              yes (evidence changed: sign-offs voided, re-checked)
    ArtifactIntegrityError       DATA_LOSS                  yes (the registry's copy was altered)
    RateLimitedError             REQUEST_LIMIT_EXCEEDED     no (retried)
    UnavailableError             TEMPORARILY_UNAVAILABLE    no (retried)
      SandboxUnavailableError    TEMPORARILY_UNAVAILABLE    no (the sandbox could not start)
    SandboxLimitError            RESOURCE_EXHAUSTED         no (a time, CPU or memory limit: retried)
    ModelUnloadableError         MODEL_UNLOADABLE           yes (the model's own code failed while loading)
    RegistryError                INTERNAL_ERROR             yes
    policies.PolicyError         PolicyError                yes (a broken policy file is never retried)

i.e. ``type=err.error_code, non_retryable=not err.retryable``. Any other exception
propagates unchanged and is retried under the activity's retry policy.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar, cast

from temporalio.exceptions import ApplicationError

from policies.errors import PolicyError
from registry_store.errors import RegistryError

__all__ = ["POLICY_ERROR_TYPE", "domain_errors", "to_application_error"]

P = ParamSpec("P")
R = TypeVar("R")

POLICY_ERROR_TYPE = "PolicyError"


def to_application_error(exc: BaseException) -> ApplicationError | None:
    """The ``ApplicationError`` a domain error becomes, or ``None`` for any other exception."""
    if isinstance(exc, RegistryError):
        return ApplicationError(exc.message, type=exc.error_code, non_retryable=not exc.retryable)
    if isinstance(exc, PolicyError):
        return ApplicationError(str(exc), type=POLICY_ERROR_TYPE, non_retryable=True)
    return None


def domain_errors(function: Callable[P, R]) -> Callable[P, R]:
    """Wrap an activity (sync or async) so domain errors carry a stable ``type`` the workflow can branch on.

    Put it below ``@activity.defn`` so the definition sees the wrapped signature.
    """
    if inspect.iscoroutinefunction(function):
        coroutine = cast(Callable[..., Awaitable[Any]], function)

        @functools.wraps(function)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return await coroutine(*args, **kwargs)
            except (RegistryError, PolicyError) as exc:
                raise _translated(exc) from exc

        return cast(Callable[P, R], async_wrapper)

    @functools.wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return function(*args, **kwargs)
        except (RegistryError, PolicyError) as exc:
            raise _translated(exc) from exc

    return wrapper


def _translated(exc: RegistryError | PolicyError) -> ApplicationError:
    error = to_application_error(exc)
    assert error is not None
    return error
