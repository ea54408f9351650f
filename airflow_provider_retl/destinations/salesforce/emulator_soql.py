"""A small SOQL subset for the Salesforce emulator: enough for lookups and inspection.

Supported::

    SELECT Id, Email, ... | COUNT()  FROM <SObject>
      [WHERE <cond> [AND|OR <cond>] ...]   -- parentheses and NOT too
      [ORDER BY <field> [ASC|DESC] [NULLS FIRST|LAST]] [LIMIT n] [OFFSET n]

    <cond>: field = | != | <> | < | <= | > | >= value
            field [NOT] IN (value, ...)
            field LIKE 'pattern%'

Values are string literals (single quotes, backslash escapes as in SOQL: ``\\'``,
``\\\\``, ``\\n`` ...), numbers, ``true``/``false``, ``null`` and dates. As in
Salesforce, text comparisons ignore case. Errors carry Salesforce's codes
(``MALFORMED_QUERY``, ``INVALID_FIELD``, ``INVALID_TYPE``) and its message layout
(the query, a caret under the culprit, "ERROR at Row:1:Column:N").
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_retl.destinations.salesforce.emulator_schema import (
    NUMBER_TYPES,
    FieldDef,
    RequestError,
    SObjectDef,
    format_value,
)

_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "b": "\b", "f": "\f", '"': '"', "'": "'", "\\": "\\"}
_KEYWORDS = frozenset(
    {
        "SELECT",
        "FROM",
        "WHERE",
        "AND",
        "OR",
        "NOT",
        "IN",
        "LIKE",
        "ORDER",
        "BY",
        "ASC",
        "DESC",
        "NULLS",
        "FIRST",
        "LAST",
        "LIMIT",
        "OFFSET",
        "NULL",
        "TRUE",
        "FALSE",
    }
)
_TOKEN = re.compile(
    r"\s*(?:(?P<string>')|(?P<number>-?\d+(?:\.\d+)?(?![\w-]))|(?P<date>\d{4}-\d{2}-\d{2}(?:T[\d:.]+(?:Z|[+-]\d{2}:?\d{2})?)?)"
    r"|(?P<ident>[A-Za-z_][\w.]*)|(?P<op>!=|<>|<=|>=|=|<|>)|(?P<punct>[(),]))"
)


@dataclass(frozen=True)
class Token:
    kind: str  # string, number, date, ident, keyword, op, punct, end
    value: Any
    column: int  # 1-based position in the query


@dataclass
class Query:
    """A parsed query, ready to run over records (dicts of canonical field name -> value)."""

    sobject: SObjectDef
    fields: list[str]
    count_only: bool = False
    where: Callable[[Mapping[str, Any]], bool] | None = None
    order_by: list[tuple[str, bool, bool]] = field(default_factory=list)  # (field, descending, nulls_last)
    limit: int | None = None
    offset: int = 0

    def run(self, records: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        rows = [r for r in records if self.where is None or self.where(r)]
        for name, descending, nulls_last in reversed(self.order_by):
            definition = self.sobject.field(name)
            present = [r for r in rows if r.get(name) is not None]
            missing = [r for r in rows if r.get(name) is None]
            present.sort(key=lambda r: _sort_key(definition, r.get(name)), reverse=descending)
            rows = present + missing if nulls_last else missing + present
        rows = rows[self.offset :]
        if self.limit is not None:
            rows = rows[: self.limit]
        return rows


def parse(soql: str, sobjects: Mapping[str, SObjectDef]) -> Query:
    """Parse ``soql`` against the known sObjects; raise ``RequestError`` (400) like Salesforce does."""
    return _Parser(soql, sobjects).parse()


def _tokenize(soql: str) -> list[Token]:
    tokens: list[Token] = []
    pos = 0
    while True:
        while pos < len(soql) and soql[pos].isspace():
            pos += 1
        if pos >= len(soql):
            tokens.append(Token("end", None, pos + 1))
            return tokens
        match = _TOKEN.match(soql, pos)
        if match is None or match.end() == pos:
            raise _malformed(soql, pos + 1, f"unexpected token: '{soql[pos]}'")
        start = match.start(match.lastgroup) if match.lastgroup else pos
        kind = match.lastgroup or ""
        if kind == "string":
            value, pos = _read_string(soql, start)
            tokens.append(Token("string", value, start + 1))
            continue
        text = match.group(kind)
        pos = match.end()
        if kind == "ident" and text.upper() in _KEYWORDS:
            tokens.append(Token("keyword", text.upper(), start + 1))
        elif kind == "number":
            tokens.append(Token("number", float(text) if "." in text else int(text), start + 1))
        else:
            tokens.append(Token(kind, text, start + 1))


def _read_string(soql: str, start: int) -> tuple[str, int]:
    out: list[str] = []
    pos = start + 1
    while pos < len(soql):
        ch = soql[pos]
        if ch == "\\":
            nxt = soql[pos + 1 : pos + 2]
            if nxt in _ESCAPES:
                out.append(_ESCAPES[nxt])
            elif nxt in ("_", "%"):
                out.append("\\" + nxt)  # kept escaped: only LIKE treats them as literals
            else:
                raise _malformed(
                    soql,
                    pos + 1,
                    "Invalid string literal '" + soql[start : pos + 2] + "'. Illegal "
                    "character sequence '\\" + nxt + "' in string literal.",
                )
            pos += 2
            continue
        if ch == "'":
            return "".join(out), pos + 1
        out.append(ch)
        pos += 1
    raise _malformed(soql, start + 1, "unexpected token: '<EOF>'")


def _caret(soql: str, column: int, text: str) -> str:
    return f"\n{soql}\n{' ' * max(0, column - 1)}^\nERROR at Row:1:Column:{column}\n{text}"


def _malformed(soql: str, column: int, text: str) -> RequestError:
    return RequestError(400, "MALFORMED_QUERY", _caret(soql, column, text))


class _Parser:
    def __init__(self, soql: str, sobjects: Mapping[str, SObjectDef]) -> None:
        self.soql = soql
        self.sobjects = {name.lower(): obj for name, obj in sobjects.items()}
        self.tokens = _tokenize(soql)
        self.pos = 0
        self.sobject: SObjectDef | None = None

    # -- token helpers
    @property
    def tok(self) -> Token:
        return self.tokens[self.pos]

    def advance(self) -> Token:
        tok = self.tokens[self.pos]
        self.pos = min(self.pos + 1, len(self.tokens) - 1)
        return tok

    def is_kw(self, *words: str) -> bool:
        return self.tok.kind == "keyword" and self.tok.value in words

    def expect_kw(self, word: str) -> Token:
        if not self.is_kw(word):
            self.unexpected()
        return self.advance()

    def expect_punct(self, char: str) -> Token:
        if not (self.tok.kind == "punct" and self.tok.value == char):
            self.unexpected()
        return self.advance()

    def unexpected(self) -> None:
        shown = "<EOF>" if self.tok.kind == "end" else str(self.tok.value)
        raise _malformed(self.soql, self.tok.column, f"unexpected token: '{shown}'")

    # -- grammar
    def parse(self) -> Query:
        self.expect_kw("SELECT")
        count_only = False
        selected: list[Token] = []
        if self.tok.kind == "ident" and self.tok.value.upper() == "COUNT":
            self.advance()
            self.expect_punct("(")
            self.expect_punct(")")
            count_only = True
        else:
            while True:
                if self.tok.kind != "ident":
                    self.unexpected()
                selected.append(self.advance())
                if self.tok.kind == "punct" and self.tok.value == ",":
                    self.advance()
                    continue
                break
        self.expect_kw("FROM")
        if self.tok.kind != "ident":
            self.unexpected()
        obj_tok = self.advance()
        sobject = self.sobjects.get(str(obj_tok.value).lower())
        if sobject is None:
            raise RequestError(
                400,
                "INVALID_TYPE",
                _caret(
                    self.soql,
                    obj_tok.column,
                    f"sObject type '{obj_tok.value}' is not supported. If you are attempting to use a custom object, be "
                    "sure to append the '__c' after the entity name. Please reference your WSDL or the describe call "
                    "for the appropriate names.",
                ),
            )
        self.sobject = sobject
        fields = [self.field_name(t) for t in selected]
        query = Query(sobject, list(dict.fromkeys(fields)), count_only=count_only)
        if self.is_kw("WHERE"):
            self.advance()
            query.where = self.expr()
        if self.is_kw("ORDER"):
            self.advance()
            self.expect_kw("BY")
            while True:
                if self.tok.kind != "ident":
                    self.unexpected()
                name = self.field_name(self.advance())
                descending = False
                if self.is_kw("ASC", "DESC"):
                    descending = self.advance().value == "DESC"
                nulls_last = descending
                if self.is_kw("NULLS"):
                    self.advance()
                    if not self.is_kw("FIRST", "LAST"):
                        self.unexpected()
                    nulls_last = self.advance().value == "LAST"
                query.order_by.append((name, descending, nulls_last))
                if self.tok.kind == "punct" and self.tok.value == ",":
                    self.advance()
                    continue
                break
        if self.is_kw("LIMIT"):
            self.advance()
            query.limit = self.whole_number()
        if self.is_kw("OFFSET"):
            self.advance()
            query.offset = self.whole_number()
        if self.tok.kind != "end":
            self.unexpected()
        return query

    def whole_number(self) -> int:
        if self.tok.kind != "number" or not isinstance(self.tok.value, int) or self.tok.value < 0:
            self.unexpected()
        return int(self.advance().value)

    def field_name(self, tok: Token) -> str:
        assert self.sobject is not None
        definition = self.sobject.field(str(tok.value))
        if definition is None:
            raise RequestError(
                400,
                "INVALID_FIELD",
                _caret(
                    self.soql,
                    tok.column,
                    f"No such column '{tok.value}' on entity '{self.sobject.name}'. If you are attempting to use a "
                    "custom field, be sure to append the '__c' after the custom field name. Please reference your WSDL "
                    "or the describe call for the appropriate names.",
                ),
            )
        return definition.name

    def expr(self) -> Callable[[Mapping[str, Any]], bool]:
        left = self.term()
        while self.is_kw("OR"):
            self.advance()
            right = self.term()
            left = _either(left, right)
        return left

    def term(self) -> Callable[[Mapping[str, Any]], bool]:
        left = self.factor()
        while self.is_kw("AND"):
            self.advance()
            right = self.factor()
            left = _both(left, right)
        return left

    def factor(self) -> Callable[[Mapping[str, Any]], bool]:
        if self.is_kw("NOT"):
            self.advance()
            inner = self.factor()
            return lambda r: not inner(r)
        if self.tok.kind == "punct" and self.tok.value == "(":
            self.advance()
            inner = self.expr()
            self.expect_punct(")")
            return inner
        return self.comparison()

    def comparison(self) -> Callable[[Mapping[str, Any]], bool]:
        if self.tok.kind != "ident":
            self.unexpected()
        assert self.sobject is not None
        name = self.field_name(self.advance())
        definition = self.sobject.field(name)
        assert definition is not None
        negate = False
        if self.is_kw("NOT"):
            self.advance()
            negate = True
            if not self.is_kw("IN"):
                self.unexpected()
        if self.is_kw("IN"):
            self.advance()
            self.expect_punct("(")
            values = [self.value()]
            while self.tok.kind == "punct" and self.tok.value == ",":
                self.advance()
                values.append(self.value())
            self.expect_punct(")")
            keys = {_key(definition, v) for v in values if v is not None}
            return lambda r: (r.get(name) is not None and _key(definition, r.get(name)) in keys) != negate
        if self.is_kw("LIKE"):
            self.advance()
            if self.tok.kind != "string":
                self.unexpected()
            pattern = _like(self.advance().value)
            return lambda r: r.get(name) is not None and bool(pattern.match(format_value(r.get(name))))
        if self.tok.kind != "op":
            self.unexpected()
        op = self.advance().value
        value = self.value()
        return _compare(definition, name, op, value)

    def value(self) -> Any:
        tok = self.tok
        if tok.kind in ("string", "number", "date"):
            self.advance()
            return tok.value.replace("\\_", "_").replace("\\%", "%") if tok.kind == "string" else tok.value
        if tok.kind == "keyword" and tok.value in ("NULL", "TRUE", "FALSE"):
            self.advance()
            return {"NULL": None, "TRUE": True, "FALSE": False}[tok.value]
        self.unexpected()
        return None  # pragma: no cover


Predicate = Callable[[Mapping[str, Any]], bool]


def _either(a: Predicate, b: Predicate) -> Predicate:
    return lambda record: a(record) or b(record)


def _both(a: Predicate, b: Predicate) -> Predicate:
    return lambda record: a(record) and b(record)


def _key(definition: FieldDef | None, value: Any) -> Any:
    if definition is not None and definition.type in NUMBER_TYPES:
        try:
            return float(value)
        except (TypeError, ValueError):
            return format_value(value).lower()
    if definition is not None and definition.type == "id":
        return format_value(value)[:15]
    if definition is not None:
        return definition.key(value)
    return format_value(value).lower()


def _sort_key(definition: FieldDef | None, value: Any) -> Any:
    key = _key(definition, value)
    return (0, key) if isinstance(key, float) else (1, str(key))


def _compare(definition: FieldDef, name: str, op: str, value: Any) -> Callable[[Mapping[str, Any]], bool]:
    if value is None:
        if op == "=":
            return lambda r: r.get(name) is None
        if op in ("!=", "<>"):
            return lambda r: r.get(name) is not None
        return lambda r: False
    wanted = _key(definition, value)

    def check(record: Mapping[str, Any]) -> bool:
        stored = record.get(name)
        if stored is None:
            return op in ("!=", "<>")
        mine = _key(definition, stored)
        try:
            return {
                "=": mine == wanted,
                "!=": mine != wanted,
                "<>": mine != wanted,
                "<": mine < wanted,
                "<=": mine <= wanted,
                ">": mine > wanted,
                ">=": mine >= wanted,
            }[op]
        except TypeError:
            return False

    return check


def _like(pattern: str) -> re.Pattern[str]:
    out = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern) and pattern[i + 1] in "_%":
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        out.append(".*" if ch == "%" else "." if ch == "_" else re.escape(ch))
        i += 1
    return re.compile("^" + "".join(out) + "$", re.IGNORECASE | re.DOTALL)
