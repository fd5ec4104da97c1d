"""``activities.importances.interpreted``: a loader's answer (untrusted JSON) is a result or a typed error,
never "no importances" by accident."""

from __future__ import annotations

from typing import Any

import pytest

from activities.errors import to_application_error
from activities.importances import ModelImportances, interpreted
from activities.loader_pool import ModelUnloadableError
from activities.sandbox import SandboxLimitError


def test_importances_keep_the_features_order_and_say_whether_they_depend_on_scale() -> None:
    answer = {"status": "importances", "names": ["b", "a"], "values": [[0.5, -2.0]], "scale_dependent": True,
              "estimator": "LogisticRegression"}

    assert interpreted(answer) == ModelImportances(
        source="model", importances={"b": 0.5, "a": -2.0}, scale_dependent=True,
        note="raw coef_ of LogisticRegression with no scaler in front")


def test_a_model_that_exposes_none_says_why() -> None:
    answer = {"status": "none", "reason": "KNeighborsClassifier exposes neither feature_importances_ nor coef_"}

    assert interpreted(answer) == ModelImportances(
        source="none", note="KNeighborsClassifier exposes neither feature_importances_ nor coef_")


def test_importances_that_do_not_map_to_the_features_are_none_with_the_reason() -> None:
    found = interpreted({"status": "importances", "names": ["a", "b"], "values": [1.0, 2.0, 3.0]})

    assert found.source == "none" and "do not map to its input features" in found.note


@pytest.mark.parametrize(
    ("answer", "error", "code", "retried"),
    [
        ({"status": "unloadable", "error": "TypeError: bad pickle"}, ModelUnloadableError, "MODEL_UNLOADABLE", False),
        ({"status": "exhausted", "error": "MemoryError: "}, SandboxLimitError, "RESOURCE_EXHAUSTED", True),
        ({"status": "importances", "names": "a", "values": [1.0]}, ModelUnloadableError, "MODEL_UNLOADABLE", False),
        ({"status": "maybe"}, ModelUnloadableError, "MODEL_UNLOADABLE", False),
    ],
)
def test_a_failed_or_malformed_answer_is_an_error(
    answer: dict[str, Any], error: type[Exception], code: str, retried: bool
) -> None:
    with pytest.raises(error) as raised:
        interpreted(answer)

    translated = to_application_error(raised.value)
    assert translated is not None and (translated.type, translated.non_retryable) == (code, not retried)
