"""The tokenizer of MLflow's search filter grammar: identifiers, quoted strings, numbers and operators."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from registry_store.errors import InvalidParameterError

__all__ = ["FLOAT", "INT", "Part", "Token", "invalid_clause", "tokenize"]


@dataclass(frozen=True)
class Part:
    """One dot-separated part of an identifier, as written."""

    text: str
    quoted: bool
    quote: str  # "", "`" or '"'


@dataclass(frozen=True)
class Token:
    """One token of a filter string and where it starts."""

    type: Literal["ident", "string", "number", "op", "lparen", "rparen", "comma", "end"]
    text: str
    pos: int
    parts: tuple[Part, ...] = ()
    value: str = ""  # the unquoted content of a string token

    def word(self) -> str | None:
        """The upper-cased bare word, if the token is one unquoted word (a keyword candidate)."""
        if self.type == "ident" and len(self.parts) == 1 and not self.parts[0].quoted:
            return self.parts[0].text.upper()
        return None


_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SUBWORD = re.compile(r"[A-Za-z0-9_]+")
_NUMBERISH = re.compile(r"[+-]?[0-9][A-Za-z0-9_.]*(?:[eE][+-][0-9]+)?")
INT = re.compile(r"[+-]?[0-9]+")
FLOAT = re.compile(r"[+-]?[0-9]+\.[0-9]*(?:[eE][+-]?[0-9]+)?|[+-]?[0-9]+[eE][+-]?[0-9]+")
_OPCHARS = re.compile(r"[=!<>]+")


def invalid_clause(text: str, detail: str = "") -> InvalidParameterError:
    """MLflow's error for a clause it cannot read."""
    return InvalidParameterError(f"Invalid clause(s) in filter string: {text}{detail}")


def _quoted(src: str, pos: int) -> tuple[str, int]:
    """Read a quoted run starting at ``src[pos]``; a doubled quote is a literal quote."""
    quote, out, i = src[pos], [], pos + 1
    while i < len(src):
        if src[i] == quote:
            if src.startswith(quote * 2, i):
                out.append(quote)
                i += 2
                continue
            return "".join(out), i + 1
        out.append(src[i])
        i += 1
    raise InvalidParameterError(f"Invalid filter string: unterminated {quote} quote starting at position {pos}.")


def _ident(src: str, pos: int) -> Token:
    """Read ``part(.part)*`` where a part is a word or a backtick/double-quoted key."""
    parts: list[Part] = []
    i = pos
    while True:
        if i < len(src) and src[i] in '`"':
            text, i = _quoted(src, i)
            parts.append(Part(text, True, src[i - 1]))
        else:
            match = (_SUBWORD if parts else _WORD).match(src, i)
            if match is None:
                raise invalid_clause(src[pos:], " (expected a key after '.')" if parts else "")
            parts.append(Part(match.group(), False, ""))
            i = match.end()
        if i < len(src) and src[i] == ".":
            i += 1
            continue
        return Token("ident", src[pos:i], pos, tuple(parts))


def tokenize(src: str) -> Iterator[Token]:
    """Yield tokens lazily (so the leftmost error is reported), then ``end`` forever."""
    i = 0
    while i < len(src):
        ch = src[i]
        if ch.isspace():
            i += 1
        elif ch in "(),":
            kind: Literal["lparen", "rparen", "comma"] = "lparen" if ch == "(" else "rparen" if ch == ")" else "comma"
            yield Token(kind, ch, i)
            i += 1
        elif ch == "'":
            text, end = _quoted(src, i)
            yield Token("string", src[i:end], i, value=text)
            i = end
        elif ch in '`"' or _WORD.match(src, i):
            tok = _ident(src, i)
            yield tok
            i = tok.pos + len(tok.text)
        elif (num := _NUMBERISH.match(src, i)) is not None:
            yield Token("number", num.group(), i)
            i = num.end()
        elif (ops := _OPCHARS.match(src, i)) is not None:
            yield Token("op", ops.group(), i)
            i = ops.end()
        else:
            raise invalid_clause(src[i:])
    while True:
        yield Token("end", "", len(src))


