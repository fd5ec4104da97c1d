"""``activities.errors``: how every domain error leaves an activity."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from temporalio import activity
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.errors import domain_errors, to_application_error
from activities.loader_pool import ModelUnloadableError
from activities.sandbox import SandboxLimitError, SandboxUnavailableError
from policies.errors import PolicyError
from registry_store.errors import (
    AliasNotFoundError,
    AlreadyExistsError,
    ArtifactIntegrityError,
    ConflictError,
    InvalidParameterError,
    InvalidStateError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitedError,
    RegistryError,
    StaleEvidenceError,
    UnauthenticatedError,
    UnavailableError,
)

# (error, ApplicationError.type, non_retryable): written out, so a changed code is noticed.
TABLE: list[tuple[Exception, str, bool]] = [
    (RegistryError("boom"), "INTERNAL_ERROR", True),
    (NotFoundError("no such model"), "RESOURCE_DOES_NOT_EXIST", True),
    (AlreadyExistsError("exists"), "RESOURCE_ALREADY_EXISTS", True),
    (InvalidParameterError("bad"), "INVALID_PARAMETER_VALUE", True),
    (AliasNotFoundError("champion"), "INVALID_PARAMETER_VALUE", True),
    (UnauthenticatedError("who are you"), "UNAUTHENTICATED", True),
    (PermissionDeniedError("not yours"), "PERMISSION_DENIED", True),
    (ConflictError("try again"), "RESOURCE_CONFLICT", False),
    (StaleEvidenceError("Production changed"), "ABORTED", True),
    (InvalidStateError("evidence changed"), "INVALID_STATE", True),
    (ArtifactIntegrityError("copy altered"), "DATA_LOSS", True),
    (RateLimitedError("too many failed tokens", retry_after_s=30), "REQUEST_LIMIT_EXCEEDED", False),
    (UnavailableError("database down"), "TEMPORARILY_UNAVAILABLE", False),
    (SandboxUnavailableError("bwrap refused"), "TEMPORARILY_UNAVAILABLE", False),
    (SandboxLimitError("spun past its CPU limit"), "RESOURCE_EXHAUSTED", False),
    (ModelUnloadableError("the model could not be loaded: TypeError"), "MODEL_UNLOADABLE", True),
    (PolicyError("policies/default.toml: production.metrics.direction: bad", file="policies/default.toml",
                 field="production.metrics.direction"), "PolicyError", True),
]


def _raiser(error: BaseException) -> Callable[[], None]:
    @domain_errors
    def failing() -> None:
        raise error

    return failing


def _subclasses(cls: type) -> set[type]:
    found: set[type] = set(cls.__subclasses__())
    for sub in list(found):
        found |= _subclasses(sub)
    return found


@pytest.mark.parametrize(("error", "error_type", "non_retryable"), TABLE, ids=lambda v: type(v).__name__)
def test_domain_error_becomes_application_error(error: Exception, error_type: str, non_retryable: bool) -> None:
    failing = _raiser(error)

    with pytest.raises(ApplicationError) as raised:
        failing()

    assert raised.value.type == error_type
    assert raised.value.non_retryable is non_retryable
    assert raised.value.message == str(error)
    assert raised.value.__cause__ is error


def test_every_registry_error_class_is_in_the_table() -> None:
    covered = {type(error) for error, _, _ in TABLE if isinstance(error, RegistryError)}
    assert _subclasses(RegistryError) | {RegistryError} == covered


@pytest.mark.parametrize("error", [ValueError("a bug"), KeyError("x"), OSError("disk"), ApplicationError("as is")])
def test_other_exceptions_propagate_unchanged(error: Exception) -> None:
    with pytest.raises(type(error)) as raised:
        _raiser(error)()

    assert raised.value is error
    assert to_application_error(error) is None


def test_results_and_metadata_pass_through() -> None:
    @domain_errors
    def add(a: int, b: int = 1) -> int:
        """Adds."""
        return a + b

    assert add(2, b=3) == 5
    assert (add.__name__, add.__doc__) == ("add", "Adds.")


async def test_async_activities_are_wrapped_too() -> None:
    @activity.defn(name="async_failing")
    @domain_errors
    async def failing(code: str) -> str:
        if code == "stale":
            raise StaleEvidenceError("Production is v3")
        return code

    env = ActivityEnvironment()
    assert await env.run(failing, "fine") == "fine"
    with pytest.raises(ApplicationError) as raised:
        await env.run(failing, "stale")
    assert (raised.value.type, raised.value.non_retryable) == ("ABORTED", True)


def test_defined_activity_keeps_its_name_and_mapping() -> None:
    @activity.defn(name="sync_failing")
    @domain_errors
    def failing(name: str) -> None:
        raise NotFoundError(f"Registered Model with name={name} not found")

    assert activity._Definition.must_from_callable(failing).name == "sync_failing"
    with pytest.raises(ApplicationError, match="name=churn not found") as raised:
        ActivityEnvironment().run(failing, "churn")
    assert (raised.value.type, raised.value.non_retryable) == ("RESOURCE_DOES_NOT_EXIST", True)
