"""Who authored a training run, and which run tags only Calabi's gateway writes (pure rules)."""

from __future__ import annotations

from typing import Any

import pytest

from policies.run_authorship import (
    AuthorSource,
    RunAuthor,
    reserved_run_tag,
    reserved_tag_refusal,
    run_author,
    run_author_label,
    stamped_run_create,
)


@pytest.mark.parametrize("key", ["mlflow.user", " MLflow.User ", "calabi.author", "Calabi.Anything"])
def test_reserved_run_tags(key: str) -> None:
    assert reserved_run_tag(key)


@pytest.mark.parametrize("key", ["mlflow.runName", "mlflow.source.name", "team", "calabi", None, 3])
def test_ordinary_run_tags(key: object) -> None:
    assert not reserved_run_tag(key)


def test_a_created_run_is_stamped_with_the_signed_in_user_whatever_the_client_claims() -> None:
    body: dict[str, Any] = {
        "experiment_id": "7", "user_id": "someone-else", "userId": "someone-else", "run_name": "r",
        "tags": [{"key": "mlflow.user", "value": "someone-else"}, {"key": "calabi.author", "value": "someone-else"},
                 {"key": "mlflow.runName", "value": "r"}],
    }

    stamped = stamped_run_create(body, "erin")

    assert stamped == {
        "experiment_id": "7", "run_name": "r", "user_id": "erin",
        "tags": [{"key": "mlflow.runName", "value": "r"}, {"key": "mlflow.user", "value": "erin"},
                 {"key": "calabi.author", "value": "erin"}],
    }
    assert stamped_run_create({"experiment_id": "7"}, "erin")["tags"][-1] == {"key": "calabi.author", "value": "erin"}


@pytest.mark.parametrize(("operation", "body"), [
    ("set-tag", {"run_id": "r", "key": "mlflow.user", "value": "someone-else"}),
    ("delete-tag", {"run_id": "r", "key": "calabi.author"}),
    ("log-batch", {"run_id": "r", "tags": [{"key": "team", "value": "x"}, {"key": "mlflow.user", "value": "x"}]}),
])
def test_writing_a_reserved_tag_later_is_refused(operation: str, body: dict[str, Any]) -> None:
    refused = reserved_tag_refusal(operation, body)
    assert refused is not None and "may not be set or deleted" in refused


@pytest.mark.parametrize(("operation", "body"), [
    ("set-tag", {"run_id": "r", "key": "team", "value": "churn"}),
    ("log-batch", {"run_id": "r", "metrics": [], "tags": [{"key": "team", "value": "x"}]}),
    ("log-batch", {"run_id": "r", "tags": "not a list"}),
    ("create", {"tags": [{"key": "mlflow.user", "value": "x"}]}),  # stamped instead
    ("update", {"run_id": "r", "key": "mlflow.user"}),
])
def test_other_writes_pass(operation: str, body: dict[str, Any]) -> None:
    assert reserved_tag_refusal(operation, body) is None


def test_the_author_calabi_stamped_wins_over_what_the_client_claims() -> None:
    tags = {"calabi.author": "erin", "mlflow.user": "someone-else"}
    assert run_author(tags, "someone-else", "reg") == RunAuthor(name="erin", source=AuthorSource.CALABI)
    assert run_author({"mlflow.user": " bob "}, "x", "reg") == RunAuthor(name="bob", source=AuthorSource.CLIENT)
    assert run_author({}, "bob", "reg") == RunAuthor(name="bob", source=AuthorSource.CLIENT)
    assert run_author({"calabi.author": " "}, " ", "reg") == RunAuthor(name="reg", source=AuthorSource.REGISTRATION)


def test_labels() -> None:
    assert [run_author_label(s) for s in ("calabi", "client", "registration", "", "other")] == [
        "verified by Calabi", "claimed by the client", "the registering user", "", ""]
