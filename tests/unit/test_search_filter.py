"""Filter/order_by grammar, page tokens and max_results: pure parsing, no database."""

from __future__ import annotations

import base64
import json
import random

import pytest

from registry_store import search
from registry_store.errors import InvalidParameterError
from registry_store.search_filter import (
    MAX_CLAUSES,
    MODEL_FILTER,
    VERSION_FILTER,
    Comparison,
    FilterRules,
    Value,
    parse_filter,
)
from registry_store.search_order import MODEL_ORDER, VERSION_ORDER, OrderKey, parse_order_by


def attr(key: str, op: str, value: Value) -> Comparison:
    return Comparison("attribute", key, op, value)


def tag(key: str, op: str, value: str) -> Comparison:
    return Comparison("tag", key, op, value)


# --------------------------------------------------------------------------- valid filters

VALID_MODEL_FILTERS: list[tuple[str | None, list[Comparison]]] = [
    (None, []),
    ("", []),
    ("   \n\t", []),
    ("name = 'a'", [attr("name", "=", "a")]),
    ("name='a'", [attr("name", "=", "a")]),
    ('name = "a"', [attr("name", "=", "a")]),
    ("attribute.name != 'a'", [attr("name", "!=", "a")]),
    ("ATTRIBUTE.name = 'a'", [attr("name", "=", "a")]),
    ("`name` = 'a'", [attr("name", "=", "a")]),
    ("attribute.`name` = 'a'", [attr("name", "=", "a")]),
    ("name <> 'a'", [attr("name", "!=", "a")]),
    ("name LIKE 'a%'", [attr("name", "LIKE", "a%")]),
    ("name like 'a%'", [attr("name", "LIKE", "a%")]),
    ("name ILike 'A%'", [attr("name", "ILIKE", "A%")]),
    ("name LIKE 'a\\_b\\%'", [attr("name", "LIKE", "a\\_b\\%")]),
    ("name IN ('a', 'b')", [attr("name", "IN", ("a", "b"))]),
    ("name in('a')", [attr("name", "IN", ("a",))]),
    ("name NOT IN ('a', \"b\")", [attr("name", "NOT IN", ("a", "b"))]),
    ("name not  in ('a')", [attr("name", "NOT IN", ("a",))]),
    ("name = 'it''s'", [attr("name", "=", "it's")]),
    ('name = "say ""hi"""', [attr("name", "=", 'say "hi"')]),
    ("name = ''", [attr("name", "=", "")]),
    ("name = 'a OR b AND c; DROP TABLE x'", [attr("name", "=", "a OR b AND c; DROP TABLE x")]),
    ("name = 'ünïcode ✓'", [attr("name", "=", "ünïcode ✓")]),
    ("tag.k = 'v'", [tag("k", "=", "v")]),
    ("tags.k != 'v'", [tag("k", "!=", "v")]),
    ("TAGS.k LIKE 'v%'", [tag("k", "LIKE", "v%")]),
    ("tag.k ILIKE 'V%'", [tag("k", "ILIKE", "V%")]),
    ("tag.`mlflow.prompt.is_prompt` != 'true'", [tag("mlflow.prompt.is_prompt", "!=", "true")]),
    ("tag.\"my key\" = 'v'", [tag("my key", "=", "v")]),
    ("tags.mlflow.source.type = 'x'", [tag("mlflow.source.type", "=", "x")]),
    ("tag.`a``b` = 'v'", [tag("a`b", "=", "v")]),
    ("tag.1k = 'v'", [tag("1k", "=", "v")]),
    ("tag.AND = 'v'", [tag("AND", "=", "v")]),
    (
        "name LIKE 'm%' AND tag.`mlflow.prompt.is_prompt` != 'true'",
        [attr("name", "LIKE", "m%"), tag("mlflow.prompt.is_prompt", "!=", "true")],
    ),
    (
        "name = 'a' and tag.k = 'v' AnD name != 'b'",
        [attr("name", "=", "a"), tag("k", "=", "v"), attr("name", "!=", "b")],
    ),
    ("name='a'AND name='b'", [attr("name", "=", "a"), attr("name", "=", "b")]),
]


@pytest.mark.parametrize(("filter_string", "expected"), VALID_MODEL_FILTERS)
def test_valid_model_filters(filter_string: str | None, expected: list[Comparison]) -> None:
    assert parse_filter(filter_string, MODEL_FILTER) == expected
    search.registered_model_search(filter_string, None)  # also translates without error


VALID_VERSION_FILTERS: list[tuple[str, list[Comparison]]] = [
    ("name = 'm'", [attr("name", "=", "m")]),
    ("version_number = 3", [attr("version_number", "=", 3)]),
    ("version_number>=-1", [attr("version_number", ">=", -1)]),
    ("version_number = 007", [attr("version_number", "=", 7)]),
    ("version_number < 2147483647", [attr("version_number", "<", 2**31 - 1)]),
    ("version_number > -2147483648", [attr("version_number", ">", -(2**31))]),
    ("attribute.version_number != +2", [attr("version_number", "!=", 2)]),
    ("version_number <> 2", [attr("version_number", "!=", 2)]),
    ("version_number < 2", [attr("version_number", "<", 2)]),
    ("version_number <= 2", [attr("version_number", "<=", 2)]),
    ("version_number > 2", [attr("version_number", ">", 2)]),
    ("run_id IN ('r1','r2')", [attr("run_id", "IN", ("r1", "r2"))]),
    ("run_id NOT IN ('r1')", [attr("run_id", "NOT IN", ("r1",))]),
    ("name IN ('a')", [attr("name", "IN", ("a",))]),
    ("source_path LIKE 's3://%'", [attr("source_path", "LIKE", "s3://%")]),
    ("source_path ILIKE 'S3://%'", [attr("source_path", "ILIKE", "S3://%")]),
    ("name='beta' AND version_number > 1", [attr("name", "=", "beta"), attr("version_number", ">", 1)]),
    ("tags.k = 'v'", [tag("k", "=", "v")]),
]


@pytest.mark.parametrize(("filter_string", "expected"), VALID_VERSION_FILTERS)
def test_valid_version_filters(filter_string: str, expected: list[Comparison]) -> None:
    assert parse_filter(filter_string, VERSION_FILTER) == expected
    search.model_version_search(filter_string, None)


# --------------------------------------------------------------------------- rejected filters

REJECTED_MODEL_FILTERS: list[tuple[str, str]] = [
    # connectives other than AND, grouping, statements, garbage
    ("name = 'a' OR name = 'b'", "Invalid clause(s) in filter string: OR"),
    ("name = 'a' or name = 'b'", "Invalid clause(s) in filter string: OR"),
    ("NOT name = 'a'", "Invalid clause(s) in filter string: NOT"),
    ("name = 'a' AND NOT name = 'b'", "Invalid clause(s) in filter string: NOT"),
    ("(name = 'a')", "Invalid clause(s) in filter string: ("),
    ("name = 'a' AND (name = 'b' OR name = 'c')", "Invalid clause(s) in filter string: ("),
    ("AND name = 'a'", "Invalid clause(s) in filter string: AND"),
    ("name = 'a' AND", "expected a comparison after AND"),
    ("name = 'a' AND AND name = 'b'", "Invalid clause(s) in filter string: AND"),
    ("name = 'a' name = 'b'", "Invalid clause(s) in filter string: name = 'b'"),
    ("name = 'a' 'b'", "Invalid clause(s) in filter string: 'b'"),
    ("name = 'a';", "Invalid clause(s) in filter string: ;"),
    ("name = 'a'; DROP TABLE x", "Invalid clause(s) in filter string: ; DROP TABLE x"),
    ("name = 'a' -- comment", "Invalid clause(s) in filter string: -- comment"),
    ("name = 'a' /* c */", "Invalid clause(s) in filter string: /* c */"),
    ("name = 'a' $", "Invalid clause(s) in filter string: $"),
    ("'a' = name", "expected an identifier"),
    ("1 = 1", "expected an identifier"),
    # injection attempts
    ("name = 'x' OR 1=1", "Invalid clause(s) in filter string: OR"),
    ("name = 'x' OR '1'='1'", "Invalid clause(s) in filter string: OR"),
    ("name = 'x' UNION SELECT * FROM users", "Invalid clause(s) in filter string: UNION SELECT * FROM users"),
    ("name = 'x' AND 1=1", "expected an identifier"),
    # quoting
    ("name = 'unterminated", "unterminated ' quote"),
    ('name = "unterminated', 'unterminated " quote'),
    ("tag.`unterminated = 'a'", "unterminated ` quote"),
    # comparators
    ("name", "Invalid comparator 'end of string'"),
    ("name == 'a'", "Invalid comparator '=='"),
    ("name =! 'a'", "Invalid comparator '=!'"),
    ("name IS NULL", "Invalid comparator 'IS'"),
    ("name NOT LIKE 'a'", "Invalid comparator 'NOT LIKE'"),
    ("name 'a'", "Invalid comparator ''a''"),
    ("name < 'a'", "Invalid comparator '<' for attribute 'name'. Valid comparators are =, !=, LIKE, ILIKE, IN"),
    ("tag.k IN ('a')", "Invalid comparator 'IN' for tag 'k'. Valid comparators are =, !=, LIKE, ILIKE."),
    ("tag.k > 'a'", "Invalid comparator '>' for tag 'k'"),
    # values
    ("name =", "Invalid value 'end of string'"),
    ("name = abc", "Invalid value 'abc'"),
    ("name = NULL", "Invalid value 'NULL'"),
    ("name = 1", "Expected a quoted string value for attribute 'name', got 1."),
    ("name = 1.5", "Expected a quoted string value for attribute 'name', got 1.5."),
    ("name = `a`", "Invalid value '`a`'"),
    ('name = "a".b', "Invalid value '\"a\".b'"),
    ("name = ('a')", "Expected a single value for attribute 'name', got a list ('a')."),
    ("name IN 'a'", "Expected a list of quoted strings such as ('a', 'b') for attribute 'name'"),
    ("name IN ()", "Invalid value ')'"),
    ("name IN ('a',)", "Invalid value ')'"),
    ("name IN ('a' 'b')", "expected ',' or ')' in a value list"),
    ("name IN ('a'", "expected ',' or ')' in a value list"),
    ("name IN ('a', 1)", "Expected a list of quoted strings"),
    ("tag.k = 1", "Expected a quoted string value for tag 'k', got 1."),
    ("name LIKE 'a\\'", "ends with an unescaped '\\'"),
    ("name LIKE 'a\\\\\\'", "ends with an unescaped '\\'"),
    # identifiers
    ("description = 'x'", "Invalid attribute key 'description' specified. Valid keys are 'name'."),
    ("Name = 'x'", "Invalid attribute key 'Name' specified."),
    ("version_number = 1", "Invalid attribute key 'version_number' specified. Valid keys are 'name'."),
    ("foo.name = 'a'", "Invalid entity type 'foo'"),
    ("`tag`.k = 'a'", "Invalid entity type 'tag'"),
    ("attribute.name.x = 'a'", "Invalid identifier 'attribute.name.x'"),
    ("tag.`a`.b = 'v'", "Invalid identifier 'tag.`a`.b'"),
    ("tag.`` = 'v'", "the key is empty"),
    ("tag.` ` = 'v'", "the key is empty"),
    ("tag. k = 'v'", "expected a key after '.'"),
    ("tag.k-x = 'v'", "Invalid clause(s) in filter string: -x = 'v'"),
    ("name.= 'a'", "expected a key after '.'"),
    ("name = 'a\x00b'", "contains a NUL character"),
    ("tag.`k\x00` = 'v'", "contains a NUL character"),
]


@pytest.mark.parametrize(("filter_string", "message"), REJECTED_MODEL_FILTERS)
def test_rejected_model_filters(filter_string: str, message: str) -> None:
    with pytest.raises(InvalidParameterError) as info:
        search.registered_model_search(filter_string, None)
    assert info.value.error_code == "INVALID_PARAMETER_VALUE"
    assert info.value.http_status == 400
    assert message in info.value.message


REJECTED_VERSION_FILTERS: list[tuple[str, str]] = [
    ("version_number = '1'", "Expected an integer value for attribute 'version_number', got '1'."),
    ("version_number = 1.5", "Expected an integer value for attribute 'version_number', got 1.5."),
    ("version_number = 1e3", "Expected an integer value for attribute 'version_number', got 1000.0."),
    ("version_number = 1abc", "Invalid value '1abc'"),
    ("version_number = 2147483648", "Integer value 2147483648 for attribute 'version_number' is out of range"),
    ("version_number > -2147483649", "out of range"),
    ("version_number = 9223372036854775807", "out of range"),
    ("version_number = 9223372036854775808", "out of range"),
    ("version_number = -9223372036854775809", "out of range"),
    ("version_number = " + "9" * 5000, "out of range"),
    ("version_number = 1.2.3", "Invalid value '1.2.3'"),
    ("version_number = - 1", "Invalid clause(s) in filter string: - 1"),
    ("version_number LIKE '1%'", "Invalid comparator 'LIKE' for attribute 'version_number'"),
    ("version_number IN (1, 2)", "Invalid comparator 'IN' for attribute 'version_number'"),
    ("source_path IN ('a')", "Invalid comparator 'IN' for attribute 'source_path'. Valid comparators are =, !="),
    ("source_path NOT IN ('a')", "Invalid comparator 'NOT IN' for attribute 'source_path'"),
    ("run_id > 'a'", "Invalid comparator '>' for attribute 'run_id'"),
    ("run_id = 5", "Expected a quoted string value for attribute 'run_id', got 5."),
    ("run_id IN (5)", "Expected a list of quoted strings"),
    (
        "current_stage = 'Production'",
        "Invalid attribute key 'current_stage' specified. "
        "Valid keys are 'name', 'run_id', 'source_path', 'version_number'.",
    ),
    ("name = 'a' OR version_number = 1", "Invalid clause(s) in filter string: OR"),
]


@pytest.mark.parametrize(("filter_string", "message"), REJECTED_VERSION_FILTERS)
def test_rejected_version_filters(filter_string: str, message: str) -> None:
    with pytest.raises(InvalidParameterError) as info:
        search.model_version_search(filter_string, None)
    assert info.value.error_code == "INVALID_PARAMETER_VALUE"
    assert message in info.value.message


def test_clause_count_is_bounded() -> None:
    at_limit = " AND ".join(["name != 'x'"] * MAX_CLAUSES)
    assert len(parse_filter(at_limit, MODEL_FILTER)) == MAX_CLAUSES
    with pytest.raises(InvalidParameterError, match="more than"):
        parse_filter(at_limit + " AND name != 'y'", MODEL_FILTER)


def test_non_string_filter_is_rejected() -> None:
    with pytest.raises(InvalidParameterError):
        parse_filter(42, MODEL_FILTER)  # type: ignore[arg-type]


def test_custom_rules_are_honoured() -> None:
    rules = FilterRules(attributes={"n": (frozenset({"="}), "integer")})
    assert parse_filter("n = 3", rules) == [attr("n", "=", 3)]
    with pytest.raises(InvalidParameterError):
        parse_filter("n != 3", rules)


# --------------------------------------------------------------------------- order_by

LUT, CT, NAME, VN = "last_updated_timestamp", "creation_timestamp", "name", "version_number"

MODEL_ORDERS: list[tuple[list[str] | None, list[OrderKey]]] = [
    (None, [OrderKey(NAME, True)]),
    ([], [OrderKey(NAME, True)]),
    (["", "  "], [OrderKey(NAME, True)]),
    (["name"], [OrderKey(NAME, True)]),
    (["name desc"], [OrderKey(NAME, False)]),
    (["name   DeSc"], [OrderKey(NAME, False)]),
    (["timestamp DESC"], [OrderKey(LUT, False), OrderKey(NAME, True)]),
    (["last_updated_timestamp"], [OrderKey(LUT, True), OrderKey(NAME, True)]),
    (["last_updated_timestamp asc", "name DESC"], [OrderKey(LUT, True), OrderKey(NAME, False)]),
]


@pytest.mark.parametrize(("order_by", "expected"), MODEL_ORDERS)
def test_model_order_by(order_by: list[str] | None, expected: list[OrderKey]) -> None:
    assert parse_order_by(order_by, MODEL_ORDER) == expected


VERSION_ORDERS: list[tuple[list[str] | None, list[OrderKey]]] = [
    (None, [OrderKey(LUT, False), OrderKey(NAME, True), OrderKey(VN, False)]),
    (["version_number asc"], [OrderKey(VN, True), OrderKey(NAME, True)]),
    (["name"], [OrderKey(NAME, True), OrderKey(VN, False)]),
    (["creation_timestamp DESC", "name DESC"], [OrderKey(CT, False), OrderKey(NAME, False), OrderKey(VN, False)]),
    (["last_updated_timestamp"], [OrderKey(LUT, True), OrderKey(NAME, True), OrderKey(VN, False)]),
]


@pytest.mark.parametrize(("order_by", "expected"), VERSION_ORDERS)
def test_version_order_by(order_by: list[str] | None, expected: list[OrderKey]) -> None:
    assert parse_order_by(order_by, VERSION_ORDER) == expected


REJECTED_ORDERS: list[tuple[str, list[str], str]] = [
    ("model", ["creation_timestamp"], "Invalid order by key 'creation_timestamp' specified. Valid keys are "),
    ("model", ["version_number"], "Invalid order by key 'version_number'"),
    ("model", ["NAME"], "Invalid order by key 'NAME'"),
    ("model", ["name, timestamp"], "Invalid order_by clause 'name, timestamp'"),
    ("model", ["name", "name DESC"], "`order_by` contains duplicate fields: name"),
    ("model", ["timestamp", "last_updated_timestamp"], "duplicate fields: last_updated_timestamp"),
    ("model", ["name UP"], "Invalid order_by clause 'name UP'"),
    ("model", ["name ASC extra"], "Invalid order_by clause 'name ASC extra'"),
    ("version", ["timestamp"], "Invalid order by key 'timestamp'"),
    ("version", ["version_number", "version_number"], "duplicate fields: version_number"),
    ("version", ["version_number; DROP TABLE x"], "Invalid order_by clause"),
]


@pytest.mark.parametrize(("entity", "order_by", "message"), REJECTED_ORDERS)
def test_rejected_order_by(entity: str, order_by: list[str], message: str) -> None:
    build = search.registered_model_search if entity == "model" else search.model_version_search
    with pytest.raises(InvalidParameterError) as info:
        build(None, order_by)
    assert info.value.error_code == "INVALID_PARAMETER_VALUE"
    assert message in info.value.message


def test_default_spec_shapes() -> None:
    assert search.registered_model_search(None, None).conditions == []
    assert len(search.registered_model_search(None, None).order) == 1
    assert len(search.model_version_search(None, None).order) == 3
    assert len(search.model_version_search("name = 'a' AND tag.k = 'v'", ["name"]).conditions) == 2


# --------------------------------------------------------------------------- page tokens


def b64(payload: bytes) -> str:
    return base64.b64encode(payload).decode()


@pytest.mark.parametrize("offset", [0, 1, 2, 99, 10_000, 2**40])
def test_page_token_round_trip(offset: int) -> None:
    token = search.encode_page_token(offset)
    assert json.loads(base64.urlsafe_b64decode(token)) == {"offset": offset}
    assert search.decode_page_token(token) == offset


@pytest.mark.parametrize(
    ("token", "offset"),
    [
        (None, 0),
        ("", 0),
        ("eyJvZmZzZXQiOiAyfQ==", 2),  # MLflow's own token for offset 2
        ("eyJvZmZzZXQiOiAyfQ", 2),  # padding stripped by a client
        (b64(b'{"offset": 7, "extra": 1}'), 7),
    ],
)
def test_page_token_accepted(token: str | None, offset: int) -> None:
    assert search.decode_page_token(token) == offset


@pytest.mark.parametrize(
    ("token", "message"),
    [
        ("not base64!!", "could not base64-decode"),
        ("a", "could not base64-decode"),
        ("ééé", "could not base64-decode"),
        (b64(b"\xff\xfe"), "could not parse its JSON content"),
        (b64(b"not json"), "could not parse its JSON content"),
        (b64(b"[" * 100_000), "could not parse its JSON content"),
        (b64(b"{}"), "non-negative integer"),
        (b64(b"[2]"), "non-negative integer"),
        (b64(b"2"), "non-negative integer"),
        (b64(b'{"offset": -1}'), "non-negative integer"),
        (b64(b'{"offset": "2"}'), "non-negative integer"),
        (b64(b'{"offset": 1.5}'), "non-negative integer"),
        (b64(b'{"offset": true}'), "non-negative integer"),
        (b64(b'{"offset": null}'), "non-negative integer"),
        (b64(json.dumps({"offset": 2**64}).encode()), "non-negative integer"),
    ],
)
def test_page_token_rejected(token: str, message: str) -> None:
    with pytest.raises(InvalidParameterError) as info:
        search.decode_page_token(token)
    assert info.value.error_code == "INVALID_PARAMETER_VALUE"
    assert info.value.message.startswith("Invalid page token")
    assert message in info.value.message


# --------------------------------------------------------------------------- max_results


@pytest.mark.parametrize(
    ("value", "limit", "expected"),
    [
        (1, 1000, 1),
        (1000, 1000, 1000),
        ("10", 1000, 10),
        (" 10 ", 1000, 10),
        ("+5", 1000, 5),
        (200_000, 200_000, 200_000),
    ],
)
def test_max_results_accepted(value: object, limit: int, expected: int) -> None:
    assert search.validate_max_results(value, limit=limit) == expected


@pytest.mark.parametrize(
    ("value", "limit"),
    [
        (0, 1000),
        (-1, 1000),
        (1001, 1000),
        ("1001", 1000),
        (200_001, 200_000),
        ("0", 1000),
        ("abc", 1000),
        ("1.5", 1000),
        ("", 1000),
        ("9" * 400, 1000),
        (1.5, 1000),
        (10.0, 1000),
        (True, 1000),
        (None, 1000),
        ([10], 1000),
    ],
)
def test_max_results_rejected(value: object, limit: int) -> None:
    with pytest.raises(InvalidParameterError) as info:
        search.validate_max_results(value, limit=limit)
    assert info.value.error_code == "INVALID_PARAMETER_VALUE"
    assert "for parameter 'max_results' supplied" in info.value.message


def test_max_results_message_is_mlflow_like() -> None:
    with pytest.raises(InvalidParameterError, match=r"Invalid value \"1001\" for parameter 'max_results' supplied"):
        search.validate_max_results("1001", limit=1000)


# --------------------------------------------------------------------------- robustness

FUZZ_ATOMS = [
    "name", "tag.", "tags.", "attribute.", "version_number", "run_id", "source_path", "`", '"', "'", "''",
    "(", ")", ",", " ", "=", "!=", "<>", "<", ">=", "LIKE", "ILIKE", "IN", "NOT", "AND", "OR", "1", "-",
    "1.5", "x", ".", ";", "\\", "%", "_", "é", "\x00", "9" * 30,
]  # fmt: skip


def test_random_input_only_ever_raises_invalid_parameter() -> None:
    rng = random.Random(20240601)
    for _ in range(5000):
        text = "".join(rng.choice(FUZZ_ATOMS) for _ in range(rng.randint(1, 12)))
        for build in (search.registered_model_search, search.model_version_search):
            try:
                build(text, None)
            except InvalidParameterError as exc:
                assert exc.error_code == "INVALID_PARAMETER_VALUE"
