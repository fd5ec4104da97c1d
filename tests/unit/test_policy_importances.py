"""Feature importances from model values or a recorded importance file."""

from __future__ import annotations

import json
import re

import pytest

from policies.importances import from_model_values, parse_importance_file


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([0.6, 0.4], {"tenure": 0.6, "plan": 0.4}),
        ([-1.5, 0.5], {"tenure": -1.5, "plan": 0.5}),
        ([[1.0, -2.0], [-3.0, 0.0]], {"tenure": 2.0, "plan": 1.0}),
        ([[0.5, -0.25]], {"tenure": 0.5, "plan": -0.25}),
    ],
)
def test_from_model_values(values: list[float] | list[list[float]], expected: dict[str, float]) -> None:
    assert from_model_values(["tenure", "plan"], values) == expected


@pytest.mark.parametrize(
    ("values", "message"),
    [([0.1], "row 0 has 1 values for 2 feature names"), ([float("nan"), 1.0], "tenure: importance nan is not finite")],
)
def test_from_model_values_refuses_bad_input(values: list[float], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        from_model_values(["tenure", "plan"], values)


@pytest.mark.parametrize(
    ("filename", "text"),
    [
        ("importances.json", json.dumps({"tenure": 0.6, "plan": 0.4})),
        ("fi.JSON", json.dumps([{"feature": "tenure", "importance": 0.6}, {"name": "plan", "value": 0.4}])),
        ("importances.csv", "feature,importance\ntenure,0.6\nplan,0.4\n"),
        ("importances.csv", "name,value,rank\ntenure,0.6,1\nplan,0.4,2\n"),
    ],
)
def test_parse_importance_file(filename: str, text: str) -> None:
    assert parse_importance_file(text, filename=filename) == {"tenure": 0.6, "plan": 0.4}


@pytest.mark.parametrize(
    ("filename", "text", "message"),
    [
        ("fi.txt", "tenure 0.6", "fi.txt: importance files must be .json or .csv"),
        ("fi.json", "{", "fi.json: not valid JSON"),
        ("fi.json", "3", "fi.json: expected an object of feature: importance or a list of rows"),
        ("fi.json", '{"tenure": "high"}', "fi.json: tenure: importance 'high' is not a number"),
        ("fi.json", '{"tenure": true}', "fi.json: tenure: importance must be a number"),
        ("fi.csv", "col,other\na,1\n", "fi.csv: row 1 needs a 'feature' and an 'importance'"),
        ("fi.csv", "feature,importance\ntenure,inf\n", "fi.csv: tenure: importance 'inf' is not finite"),
    ],
)
def test_parse_importance_file_refuses_malformed_files(filename: str, text: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_importance_file(text, filename=filename)
