"""The fields of an MLflow registry request: the query string of a GET, else a JSON object body."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request

from registry_store.errors import InvalidParameterError

__all__ = ["MAX_BODY", "Params", "read_params"]

MAX_BODY = 1_000_000


class Params:
    """Request fields from the JSON body (POST/PATCH/DELETE) or the query string (GET)."""

    def __init__(self, values: Mapping[str, Any], lists: Mapping[str, list[Any]]) -> None:
        self._values = values
        self._lists = lists

    def get(self, name: str) -> Any:
        """An optional field (None when absent)."""
        return self._values.get(name)

    def require(self, name: str) -> Any:
        """A required field; missing or empty gives INVALID_PARAMETER_VALUE."""
        value = self._values.get(name)
        if value is None or value == "":
            raise InvalidParameterError(f"Missing value for required parameter '{name}'.")
        return value

    def repeated(self, name: str) -> list[Any]:
        """A repeated field."""
        value = self._lists.get(name, self._values.get(name))
        if value is None:
            return []
        if not isinstance(value, list):
            raise InvalidParameterError(f"Parameter '{name}' must be a list.")
        return value

    def string(self, name: str) -> str | None:
        """An optional string field."""
        value = self.get(name)
        if value is not None and not isinstance(value, str):
            raise InvalidParameterError(f"Parameter '{name}' must be a string.")
        return value

    def boolean(self, name: str) -> bool:
        """An optional boolean field (query strings send 'true'/'false')."""
        value = self.get(name)
        if value is None:
            return False
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise InvalidParameterError(f"Parameter '{name}' must be a boolean, got {value!r}.")

    def tags(self) -> list[tuple[object, object]]:
        """``[{"key", "value"}]`` pairs."""
        pairs = []
        for tag in self.repeated("tags"):
            if not isinstance(tag, dict) or "key" not in tag:
                raise InvalidParameterError("Each tag must be an object with 'key' and 'value'.")
            pairs.append((tag.get("key"), tag.get("value")))
        return pairs


async def read_params(request: Request) -> Params:
    """The request's fields: the query string of a GET, else the JSON object in the body."""
    if request.method == "GET":
        query = request.query_params
        return Params({k: query.get(k) for k in query}, {k: query.getlist(k) for k in query})
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise InvalidParameterError(f"Request body exceeds {MAX_BODY} bytes.")
    if not raw.strip():
        return Params({}, {})
    try:
        body = json.loads(raw)
        json.dumps(body, ensure_ascii=False).encode("utf-8")  # lone surrogates are not storable text
    except (ValueError, RecursionError) as exc:
        raise InvalidParameterError(f"Malformed JSON in request body: {exc}") from exc
    if not isinstance(body, dict):
        raise InvalidParameterError("Request body must be a JSON object.")
    return Params(body, {})
