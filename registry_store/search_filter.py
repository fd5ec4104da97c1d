"""MLflow search grammar: a hand-written filter parser (no SQL here; ``order_by`` is in search_order).

A filter is ``clause (AND clause)*``; a clause is ``identifier comparator value``. Identifiers
are ``key``, ``attribute.key``, ``tag.key`` or ``tags.key``, with keys optionally quoted in
backticks or double quotes. Values are quoted strings, integer literals or ``('a', 'b')`` lists.
``OR``, ``NOT``, parentheses and anything else are rejected with ``InvalidParameterError``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from registry_store.errors import InvalidParameterError
from registry_store.filter_tokens import FLOAT, INT, Part, Token, invalid_clause, tokenize

__all__ = [
    "MODEL_FILTER",
    "PROMPT_TAG",
    "VERSION_FILTER",
    "Comparison",
    "FilterRules",
    "Value",
    "parse_filter",
]

PROMPT_TAG = "mlflow.prompt.is_prompt"
MAX_CLAUSES = 200
MAX_LIST_ITEMS = 5000
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1  # integer columns are 32-bit on PostgreSQL

Scalar = str | int | float
Value = Scalar | tuple[Scalar, ...]
Kind = Literal["attribute", "tag"]

STRING_OPS = frozenset({"=", "!=", "LIKE", "ILIKE"})
SET_OPS = frozenset({"IN", "NOT IN"})
NUMERIC_OPS = frozenset({"=", "!=", "<", "<=", ">", ">="})
_SYMBOL_OPS = {"=": "=", "!=": "!=", "<>": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
_ALL_OPS = "=, !=, <>, <, <=, >, >=, LIKE, ILIKE, IN, NOT IN"
_OP_ORDER = ("=", "!=", "<", "<=", ">", ">=", "LIKE", "ILIKE", "IN", "NOT IN")
_PREFIXES: dict[str, Kind] = {"attribute": "attribute", "tag": "tag", "tags": "tag"}
_CONNECTIVES = frozenset({"OR", "NOT", "AND"})


@dataclass(frozen=True)
class Comparison:
    """One validated clause: ``<kind>.<key> <comparator> <value>``."""

    kind: Kind
    key: str
    comparator: str
    value: Value


@dataclass(frozen=True)
class FilterRules:
    """Which attributes an entity accepts: attribute -> (comparators, value type)."""

    attributes: Mapping[str, tuple[frozenset[str], Literal["string", "integer"]]]
    tag_comparators: frozenset[str] = STRING_OPS


MODEL_FILTER = FilterRules(attributes={"name": (STRING_OPS | SET_OPS, "string")})
VERSION_FILTER = FilterRules(
    attributes={
        "name": (STRING_OPS | SET_OPS, "string"),
        "run_id": (STRING_OPS | SET_OPS, "string"),
        "source_path": (STRING_OPS, "string"),
        "version_number": (NUMERIC_OPS, "integer"),
    }
)


# --------------------------------------------------------------------------- parser


class _Parser:
    def __init__(self, src: str, rules: FilterRules) -> None:
        self.src = src
        self.rules = rules
        self.tokens = tokenize(src)
        self.ahead: Token | None = None

    def peek(self) -> Token:
        if self.ahead is None:
            self.ahead = next(self.tokens)
        return self.ahead

    def take(self) -> Token:
        tok = self.peek()
        self.ahead = None
        return tok

    def rest(self, tok: Token) -> str:
        return self.src[tok.pos :].strip()

    def parse(self) -> list[Comparison]:
        clauses = [self.clause()]
        while (tok := self.take()).type != "end":
            word = tok.word()
            if word != "AND":
                raise invalid_clause(word if word is not None and word in _CONNECTIVES else self.rest(tok))
            if len(clauses) >= MAX_CLAUSES:
                raise InvalidParameterError(f"Filter string has more than {MAX_CLAUSES} clauses.")
            clauses.append(self.clause())
        return clauses

    def clause(self) -> Comparison:
        tok = self.take()
        word = tok.word()
        if tok.type == "end":
            raise invalid_clause(self.src.strip() or "''", " (expected a comparison after AND)")
        if word in _CONNECTIVES or tok.type in ("lparen", "rparen"):
            raise invalid_clause(word or tok.text)
        if tok.type != "ident":
            raise invalid_clause(self.rest(tok), " (expected an identifier)")
        kind, key = self.identifier(tok)
        comparator = self.comparator()
        value = self.value()
        return self.check(kind, key, comparator, value)

    def identifier(self, tok: Token) -> tuple[Kind, str]:
        parts = tok.parts
        if len(parts) == 1:
            return "attribute", self.key_text(parts[0], tok)
        head = parts[0]
        kind = None if head.quoted else _PREFIXES.get(head.text.lower())
        if kind is None:
            raise InvalidParameterError(
                f"Invalid entity type '{head.text}' in identifier '{tok.text}'. "
                "Valid values are 'attribute', 'tag', 'tags'."
            )
        rest = parts[1:]
        if len(rest) == 1:
            return kind, self.key_text(rest[0], tok)
        if kind == "tag" and not any(p.quoted for p in rest):
            return kind, ".".join(p.text for p in rest)
        raise InvalidParameterError(
            f"Invalid identifier '{tok.text}'. Quote a key containing dots or special characters "
            "in backticks, e.g. tag.`my.key`."
        )

    @staticmethod
    def key_text(part: Part, tok: Token) -> str:
        if not part.text.strip():
            raise InvalidParameterError(f"Invalid identifier '{tok.text}': the key is empty.")
        return part.text

    def comparator(self) -> str:
        tok = self.take()
        if tok.type == "op":
            if tok.text not in _SYMBOL_OPS:
                raise InvalidParameterError(f"Invalid comparator '{tok.text}'. Valid comparators are {_ALL_OPS}.")
            return _SYMBOL_OPS[tok.text]
        word = tok.word()
        if word in ("LIKE", "ILIKE", "IN"):
            return word
        if word == "NOT" and self.peek().word() == "IN":
            self.take()
            return "NOT IN"
        shown = tok.text if tok.type != "end" else "end of string"
        if word == "NOT" and self.peek().type != "end":
            shown = f"NOT {self.peek().text}"
        raise InvalidParameterError(f"Invalid comparator '{shown}'. Valid comparators are {_ALL_OPS}.")

    def value(self) -> Value:
        tok = self.take()
        if tok.type == "lparen":
            items = [self.scalar(self.take())]
            while (sep := self.take()).type == "comma":
                items.append(self.scalar(self.take()))
                if len(items) > MAX_LIST_ITEMS:
                    raise InvalidParameterError(f"A filter list may hold at most {MAX_LIST_ITEMS} values.")
            if sep.type != "rparen":
                raise invalid_clause(self.rest(sep) or "end of string", " (expected ',' or ')' in a value list)")
            return tuple(items)
        return self.scalar(tok)

    def scalar(self, tok: Token) -> Scalar:
        if tok.type == "string":
            return tok.value
        if tok.type == "ident" and len(tok.parts) == 1 and tok.parts[0].quote == '"':
            return tok.parts[0].text
        if tok.type == "number":
            if INT.fullmatch(tok.text):
                digits = tok.text.lstrip("+-").lstrip("0")
                if len(digits) > 19 or not -(2**63) <= (number := int(tok.text)) < 2**63:
                    raise InvalidParameterError(f"Integer value {tok.text} in filter string is out of range.")
                return number
            if FLOAT.fullmatch(tok.text):
                return float(tok.text)
        shown = tok.text if tok.type != "end" else "end of string"
        raise InvalidParameterError(
            f"Invalid value '{shown}' in filter string: expected a quoted string, an integer or a list."
        )

    def check(self, kind: Kind, key: str, comparator: str, value: Value) -> Comparison:
        """Apply the entity's rules for keys, comparators and value types."""
        if kind == "tag":
            allowed, vtype, what = self.rules.tag_comparators, "string", f"tag '{key}'"
        elif key in self.rules.attributes:
            (allowed, vtype), what = self.rules.attributes[key], f"attribute '{key}'"
        else:
            valid = ", ".join(f"'{k}'" for k in sorted(self.rules.attributes))
            raise InvalidParameterError(f"Invalid attribute key '{key}' specified. Valid keys are {valid}.")
        if comparator not in allowed:
            valid = ", ".join(op for op in _OP_ORDER if op in allowed)
            raise InvalidParameterError(f"Invalid comparator '{comparator}' for {what}. Valid comparators are {valid}.")
        if comparator in SET_OPS:
            if not isinstance(value, tuple) or not all(isinstance(v, str) for v in value):
                raise InvalidParameterError(
                    f"Expected a list of quoted strings such as ('a', 'b') for {what} with comparator "
                    f"'{comparator}', got {_show(value)}."
                )
        elif isinstance(value, tuple):
            raise InvalidParameterError(f"Expected a single value for {what}, got a list {_show(value)}.")
        elif vtype == "integer" and not isinstance(value, int):
            raise InvalidParameterError(f"Expected an integer value for {what}, got {_show(value)}.")
        elif isinstance(value, int) and not _INT32_MIN <= value <= _INT32_MAX:
            raise InvalidParameterError(
                f"Integer value {value} for {what} is out of range [{_INT32_MIN}, {_INT32_MAX}]."
            )
        elif vtype == "string" and not isinstance(value, str):
            raise InvalidParameterError(f"Expected a quoted string value for {what}, got {_show(value)}.")
        if comparator in ("LIKE", "ILIKE") and isinstance(value, str) and _ends_in_escape(value):
            raise InvalidParameterError(
                f"Invalid {comparator} pattern {_show(value)} for {what}: it ends with an unescaped '\\'."
            )
        return Comparison(kind, key, comparator, value)


def _show(value: Value) -> str:
    if isinstance(value, tuple):
        return "(" + ", ".join(_show(v) for v in value) + ")"
    return repr(value)


def _ends_in_escape(pattern: str) -> bool:
    return (len(pattern) - len(pattern.rstrip("\\"))) % 2 == 1


def parse_filter(filter_string: str | None, rules: FilterRules) -> list[Comparison]:
    """Parse and validate a filter; ``None`` or blank means no clauses."""
    if filter_string is None:
        return []
    if not isinstance(filter_string, str):
        raise InvalidParameterError(f"Invalid filter string {filter_string!r}: expected a string.")
    if not filter_string.strip():
        return []
    if "\x00" in filter_string:
        raise InvalidParameterError("Invalid filter string: it contains a NUL character.")
    return _Parser(filter_string, rules).parse()
