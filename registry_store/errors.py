"""Domain errors, each carrying an MLflow error code and an HTTP status.

    RegistryError                      INTERNAL_ERROR            500
    ├── NotFoundError                  RESOURCE_DOES_NOT_EXIST   404
    ├── AlreadyExistsError             RESOURCE_ALREADY_EXISTS   400 (MLflow's status)
    ├── InvalidParameterError          INVALID_PARAMETER_VALUE   400
    │   └── AliasNotFoundError         INVALID_PARAMETER_VALUE   400 (MLflow's quirk)
    ├── UnauthenticatedError           UNAUTHENTICATED           401
    ├── PermissionDeniedError          PERMISSION_DENIED         403
    ├── ConflictError                  RESOURCE_CONFLICT         409 (retryable)
    ├── StaleEvidenceError             ABORTED                   409 (re-check, then retry)
    ├── InvalidStateError              INVALID_STATE             409 (a live promotion forbids it)
    ├── ArtifactIntegrityError         DATA_LOSS                 409 (not 5xx: clients would retry)
    ├── RateLimitedError               REQUEST_LIMIT_EXCEEDED    429 (with Retry-After)
    └── UnavailableError               TEMPORARILY_UNAVAILABLE   503 (retryable)

They are mapped in one place each: ``api/errors.py`` (HTTP), ``cli.py`` (exit code)
and ``activities`` (Temporal ``ApplicationError``).
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "AliasNotFoundError",
    "AlreadyExistsError",
    "ArtifactIntegrityError",
    "ConflictError",
    "InvalidParameterError",
    "InvalidStateError",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitedError",
    "RegistryError",
    "StaleEvidenceError",
    "UnauthenticatedError",
    "UnavailableError",
    "refused",
]


class RegistryError(Exception):
    """Base of every domain error."""

    error_code: ClassVar[str] = "INTERNAL_ERROR"
    http_status: ClassVar[int] = 500
    retryable: ClassVar[bool] = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFoundError(RegistryError):
    """A model, version, user or other resource does not exist."""

    error_code = "RESOURCE_DOES_NOT_EXIST"
    http_status = 404


class AlreadyExistsError(RegistryError):
    """A resource with that key exists already."""

    error_code = "RESOURCE_ALREADY_EXISTS"
    http_status = 400


class InvalidParameterError(RegistryError):
    """A request field is missing, malformed or out of range."""

    error_code = "INVALID_PARAMETER_VALUE"
    http_status = 400


class AliasNotFoundError(InvalidParameterError):
    """An alias does not exist (MLflow answers 400 here, not 404)."""

    def __init__(self, alias: str) -> None:
        super().__init__(f"Registered model alias {alias} not found.")


class UnauthenticatedError(RegistryError):
    """No valid credentials were presented."""

    error_code = "UNAUTHENTICATED"
    http_status = 401


class PermissionDeniedError(RegistryError):
    """The authenticated user lacks the role the action needs."""

    error_code = "PERMISSION_DENIED"
    http_status = 403


class ConflictError(RegistryError):
    """A concurrent change won; the caller may retry."""

    error_code = "RESOURCE_CONFLICT"
    http_status = 409
    retryable = True


class StaleEvidenceError(RegistryError):
    """A promotion's evidence no longer matches the registry (e.g. Production changed meanwhile)."""

    error_code = "ABORTED"
    http_status = 409


class InvalidStateError(RegistryError):
    """The subject's state forbids the change: a live promotion is bound to it, or its evidence changed."""

    error_code = "INVALID_STATE"
    http_status = 409


class ArtifactIntegrityError(RegistryError):
    """The registry's copy differs from what was recorded at registration."""

    error_code = "DATA_LOSS"
    http_status = 409


class RateLimitedError(RegistryError):
    """Too many failed attempts from one client; ``retry_after_s`` says when to try again."""

    error_code = "REQUEST_LIMIT_EXCEEDED"
    http_status = 429
    retryable = True

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class UnavailableError(RegistryError):
    """A dependency (artifact store, tracking server) is unreachable."""

    error_code = "TEMPORARILY_UNAVAILABLE"
    http_status = 503
    retryable = True


def refused(error_code: str | None, message: str) -> RegistryError:
    """The domain error for a refused promotion decision: 400 or 403 by its MLflow code, else a conflict."""
    for error in (InvalidParameterError, PermissionDeniedError):
        if error.error_code == error_code:
            return error(message)
    return ConflictError(message)
