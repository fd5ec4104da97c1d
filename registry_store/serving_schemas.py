"""ServingSchemaService: the live serving schema (MLflow signature JSON) promotions are checked against."""

from __future__ import annotations

import json

from registry_store.audit import Actor
from registry_store.context import ServiceBase
from registry_store.errors import InvalidParameterError
from registry_store.model_access import EDIT, READ
from registry_store.tables import ServingSchemaRow
from registry_store.users import require_role

__all__ = ["ServingSchemaService"]


class ServingSchemaService(ServiceBase):
    """Set and read a model's serving schema."""

    def set_serving_schema(self, actor: Actor, *, model: object, signature: str) -> None:
        """Record the live serving schema (MLflow signature JSON) promotions are checked against."""
        require_role(actor, "engineer", "set serving schemas")
        _check_signature_json(signature)
        with self._db.write() as session:
            row = self._model(session, model, actor=actor, need=EDIT, lock=True)
            assert row.id is not None
            old = session.get(ServingSchemaRow, row.id)
            session.merge(ServingSchemaRow(model_id=row.id, signature=signature,
                                           last_updated_timestamp=self._clock()))
            self._audit(session, actor, "set_serving_schema", row.name, None,
                        before={"signature": old.signature if old else None}, after={"signature": signature})

    def get_serving_schema(self, actor: Actor, model: object) -> str:
        """The model's serving schema, or an empty string when none is set."""
        require_role(actor, "viewer", "read the registry")
        with self._db.read() as session:
            row = self._model(session, model, actor=actor, need=READ)
            schema = session.get(ServingSchemaRow, row.id)
            return schema.signature if schema else ""


def _check_signature_json(signature: str) -> None:
    try:
        document = json.loads(signature)
    except ValueError as exc:
        raise InvalidParameterError(f"The serving schema is not valid JSON: {exc}") from exc
    if not isinstance(document, dict) or "inputs" not in document:
        raise InvalidParameterError("The serving schema must be an MLflow signature object with 'inputs'.")
