"""OData v4 for the entity sets that have a contract: CSDL `$metadata` and a small `$filter`
parser that yields parametrized SQL (values are always bound, never pasted).

Grammar (what Power BI folds for key-column filters):
    filter     := conjunct ("and" conjunct)*
    conjunct   := "(" filter ")" | comparison
    comparison := column op literal | literal op column
    op         := eq | ne | gt | ge | lt | le
    literal    := 'text' ('' escapes ') | integer | decimal | YYYY-MM-DD
                  | YYYY-MM-DDThh:mm[:ss[.fff]](Z|±hh:mm) | true | false
Only the set's key columns may be filtered.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from xml.sax.saxutils import quoteattr

from psycopg import sql

from app.core.entities import EntitySet
from app.core.errors import invalid

NAMESPACE = "fluxo"
OPERATORS = {"eq": "=", "ne": "<>", "gt": ">", "ge": ">=", "lt": "<", "le": "<="}
MAX_FILTER_CHARS = 2048
MAX_COMPARISONS = 32

EDM_TYPES = {"string": "Edm.String", "date": "Edm.Date", "timestamp": "Edm.DateTimeOffset",
             "long": "Edm.Int64", "double": "Edm.Double"}


def edm_type(contract_type: str) -> str:
    if contract_type.startswith("decimal"):
        return "Edm.Decimal"
    return EDM_TYPES[contract_type]


def metadata_xml(entity_sets: dict[str, EntitySet]) -> str:
    """The CSDL document: one EntityType (named after its set) per entity set, in one container."""
    types, sets = [], []
    for name, entity in entity_sets.items():
        type_name = f"{name}Row"
        props = []
        for column in entity.contract.columns:
            facets = ""
            if column.type.startswith("decimal"):
                precision, scale = column.type[column.type.index("(") + 1:-1].split(",")
                facets = f' Precision="{precision}" Scale="{scale}"'
            nullable = ' Nullable="false"' if column.required or column.name in entity.key else ""
            props.append(f'<Property Name="{column.name}" Type="{edm_type(column.type)}"{nullable}{facets}/>')
        keys = "".join(f'<PropertyRef Name="{k}"/>' for k in entity.key)
        types.append(f'<EntityType Name="{type_name}"><Key>{keys}</Key>{"".join(props)}</EntityType>')
        sets.append(f'<EntitySet Name="{name}" EntityType="{NAMESPACE}.{type_name}">'
                    f'<Annotation Term="Org.OData.Core.V1.Description" String={quoteattr(entity.summary)}/>'
                    "</EntitySet>")
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        '<edmx:Edmx xmlns:edmx="http://docs.oasis-open.org/odata/ns/edmx" Version="4.0">'
        '<edmx:DataServices>'
        f'<Schema xmlns="http://docs.oasis-open.org/odata/ns/edm" Namespace="{NAMESPACE}">'
        + "".join(types)
        + f'<EntityContainer Name="Container">{"".join(sets)}</EntityContainer>'
        "</Schema></edmx:DataServices></edmx:Edmx>"
    )


# --- $filter ---------------------------------------------------------------------------------

_TOKEN = re.compile(r"""\s*(?:
    (?P<string>'(?:[^']|'')*')
  | (?P<datetime>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?(?:Z|[+-]\d{2}:\d{2}))
  | (?P<date>\d{4}-\d{2}-\d{2})
  | (?P<number>-?\d+(?:\.\d+)?)
  | (?P<paren>[()])
  | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
)""", re.VERBOSE)


def tokenize(text: str) -> list[tuple[str, str]]:
    tokens, position = [], 0
    while position < len(text):
        if text[position:].strip() == "":
            break
        match = _TOKEN.match(text, position)
        if not match or match.end() == position:
            raise invalid("$filter", f"cannot read the filter at character {position + 1}")
        kind = match.lastgroup
        tokens.append((kind, match.group(kind)))
        position = match.end()
    return tokens


class _Parser:
    def __init__(self, entity: EntitySet, tokens: list[tuple[str, str]]) -> None:
        self.entity, self.tokens, self.i = entity, tokens, 0
        self.params: list[Any] = []
        self.comparisons = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self) -> tuple[str, str]:
        token = self.peek()
        if token is None:
            raise invalid("$filter", "the filter ends too early")
        self.i += 1
        return token

    def filter(self) -> sql.Composable:
        parts = [self.conjunct()]
        while (token := self.peek()) and token == ("word", "and"):
            self.take()
            parts.append(self.conjunct())
        return sql.SQL("({})").format(sql.SQL(" AND ").join(parts))

    def conjunct(self) -> sql.Composable:
        if self.peek() == ("paren", "("):
            self.take()
            inner = self.filter()
            if self.take() != ("paren", ")"):
                raise invalid("$filter", "a parenthesis is not closed")
            return inner
        return self.comparison()

    def comparison(self) -> sql.Composable:
        self.comparisons += 1
        if self.comparisons > MAX_COMPARISONS:
            raise invalid("$filter", f"at most {MAX_COMPARISONS} comparisons")
        left, op, right = self.take(), self.take(), self.take()
        if op[0] != "word" or op[1] not in OPERATORS:
            raise invalid("$filter", f"unknown operator {op[1]!r} (eq ne gt ge lt le and)")
        operator = OPERATORS[op[1]]
        if left[0] == "word" and left[1] not in ("true", "false"):
            column, literal = left[1], right
        elif right[0] == "word" and right[1] not in ("true", "false"):
            column, literal = right[1], left
            operator = {">": "<", "<": ">", ">=": "<=", "<=": ">="}.get(operator, operator)
        else:
            raise invalid("$filter", "a comparison needs a column")
        if column not in self.entity.key:
            raise invalid("$filter", f"{column!r} cannot be filtered; filterable: {', '.join(self.entity.key)}")
        self.params.append(literal_value(column, self.entity.type_of(column), literal))
        return sql.SQL("{} {} %s").format(sql.Identifier("r", column), sql.SQL(operator))


def literal_value(column: str, contract_type: str, token: tuple[str, str]) -> Any:
    kind, text = token
    try:
        if contract_type == "string" and kind == "string":
            value = text[1:-1].replace("''", "'")
            if "\x00" in value or len(value) > 256:
                raise ValueError
            return value
        if contract_type == "date" and kind == "date":
            return date.fromisoformat(text)
        if contract_type == "timestamp" and kind == "datetime":
            return datetime.fromisoformat(text.replace("Z", "+00:00"))
        if contract_type == "long" and kind == "number" and "." not in text:
            value = int(text)
            if not -2**63 <= value < 2**63:
                raise ValueError
            return value
        if (contract_type == "double" or contract_type.startswith("decimal")) and kind == "number":
            return Decimal(text)
    except (ValueError, InvalidOperation):
        pass
    raise invalid("$filter", f"{text!r} is not a {edm_type(contract_type)} value for {column}")


def parse_filter(entity: EntitySet, text: str) -> tuple[sql.Composable, list[Any]]:
    if len(text) > MAX_FILTER_CHARS:
        raise invalid("$filter", f"at most {MAX_FILTER_CHARS} characters")
    parser = _Parser(entity, tokenize(text))
    condition = parser.filter()
    if parser.peek() is not None:
        raise invalid("$filter", f"unexpected {parser.peek()[1]!r}")
    return condition, parser.params


def parse_orderby(entity: EntitySet, text: str | None) -> tuple[list[tuple[str, str]], bool]:
    """[(column, ASC|DESC)] with the key appended; and whether it is the plain key order."""
    order: list[tuple[str, str]] = []
    for item in (text or "").split(","):
        words = item.split()
        if not words:
            continue
        if len(words) > 2 or words[0] not in entity.columns or (len(words) == 2 and words[1] not in ("asc", "desc")):
            raise invalid("$orderby", f"{item.strip()!r} is not 'column [asc|desc]' of {entity.name}")
        if words[0] not in (c for c, _ in order):
            order.append((words[0], "DESC" if len(words) == 2 and words[1] == "desc" else "ASC"))
    key_order = [(k, "ASC") for k in entity.key]
    plain = not order or order == key_order[:len(order)]
    for k in entity.key:
        if k not in (c for c, _ in order):
            order.append((k, "ASC"))
    return order, plain


def parse_select(entity: EntitySet, text: str | None) -> list[str]:
    if not text or text.strip() == "*":
        return entity.columns
    chosen = [c.strip() for c in text.split(",") if c.strip()]
    unknown = [c for c in chosen if c not in entity.columns]
    if unknown:
        raise invalid("$select", f"unknown columns {', '.join(unknown)} of {entity.name}")
    return [c for c in entity.columns if c in chosen]
