"""The one place where domain errors become Temporal errors.

A ``RegistryError`` becomes ``ApplicationError(type=<MLflow error code>)``, non-retryable
unless the error says it may be retried; a broken policy file is never retried.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from temporalio.exceptions import ApplicationError

from policies.errors import PolicyError
from registry_store.errors import RegistryError

__all__ = ["domain_errors"]

P = ParamSpec("P")
R = TypeVar("R")


def domain_errors(function: Callable[P, R]) -> Callable[P, R]:
    """Wrap an activity so domain errors carry a stable ``type`` the workflow can branch on."""

    @functools.wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return function(*args, **kwargs)
        except RegistryError as exc:
            raise ApplicationError(exc.message, type=exc.error_code, non_retryable=not exc.retryable) from exc
        except PolicyError as exc:
            raise ApplicationError(str(exc), type="PolicyError", non_retryable=True) from exc

    return wrapper
