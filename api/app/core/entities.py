"""Entity sets: one description per list resource drives its REST route, CSV export, OData
entity set and dashboard series.

A set reads one warehouse table or view over a day window, in key order. Its rows are
either the columns of a `fluxo.contract` Contract (typed; served as JSON, CSV and OData) or,
without a contract, whole rows as `to_jsonb(r)` (columns added to the table appear without
a code change; JSON and CSV only). PostgreSQL renders the JSON of each row, so a page costs
one query and no per-value Python work; decimals come out exactly (REST: as strings with
their scale, the documented encoding; OData: as numbers).

Adding a resource is one `EntitySet(...)` in `app.resources` (the fraud alerts are one).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from psycopg import sql

from app.core.errors import invalid
from fluxo.contract import Contract


@dataclass(frozen=True)
class Series:
    """A dashboard chart fed by an entity set: `value` per `day`, summed over the other keys."""

    title: str
    value: str  # a column, or a dotted path into a JSON column ("counts.quarantined")
    unit: str = ""
    # How rows of one day combine: "sum" (e.g. over merchants) or "max" (e.g. reruns of a day).
    per_day: str = "sum"


@dataclass(frozen=True)
class EntitySet:
    name: str  # OData entity set name, e.g. "DailyMetrics"
    path: str  # REST path, e.g. "/metrics/daily"
    scope: str
    table: tuple[str, str]  # (schema, table or view)
    summary: str
    contract: Contract | None = None
    # Key (order, keyset cursor) and its contract types; taken from the contract when there is one.
    key: tuple[str, ...] = ()
    key_types: tuple[str, ...] = ()
    day_column: str = "event_date"
    # FastAPI dependency returning {column: value or None} from the route's own query parameters.
    filters: Callable[..., dict[str, Any]] | None = None
    paged: bool = True
    odata: bool = True
    series: tuple[Series, ...] = ()
    tag: str = "metrics"
    cache: bool = True
    response_model: Any = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.contract is not None:
            if not self.key:
                object.__setattr__(self, "key", self.contract.key)
            object.__setattr__(self, "key_types", tuple(self.contract.column(k).type for k in self.key))
        if len(self.key_types) != len(self.key):
            raise ValueError(f"{self.name}: give the type of every key column")

    @property
    def columns(self) -> list[str]:
        return self.contract.names if self.contract else []

    def type_of(self, column: str) -> str:
        return self.contract.column(column).type


# --- SQL ------------------------------------------------------------------------------------


def json_object(entity: EntitySet, columns: list[str] | None = None,
                as_text: tuple[str, ...] = ("decimal",)) -> sql.Composable:
    """The SQL expression of one row's JSON text; columns whose type starts with one of
    `as_text` become JSON strings (decimals keep their scale: "1234.50")."""
    if entity.contract is None:
        return sql.SQL("to_jsonb(r)::text")
    parts = []
    for name in columns or entity.columns:
        ident = sql.Identifier("r", name)
        expr = ident
        if entity.type_of(name).startswith(as_text):
            expr = sql.SQL("{}::text").format(ident)
        parts += [sql.Literal(name), expr]
    return sql.SQL("json_build_object({})::text").format(sql.SQL(", ").join(parts))


@dataclass(frozen=True)
class AtLeast:
    """A filter value meaning `column >= value` (instead of equality)."""

    value: Any


@dataclass(frozen=True)
class ListHas:
    """A filter value meaning: the comma-separated list in `column` holds `value`."""

    value: str


@dataclass
class Query:
    """WHERE conditions and parameters for one entity set."""

    entity: EntitySet
    where: list[sql.Composable] = field(default_factory=list)
    params: list[Any] = field(default_factory=list)

    def window(self, first: date, last: date) -> Query:
        self.where.append(sql.SQL("{} BETWEEN %s AND %s").format(sql.Identifier("r", self.entity.day_column)))
        self.params += [first, last]
        return self

    def equal(self, filters: dict[str, Any]) -> Query:
        """column = value for each filter given (AtLeast: >=; ListHas: an item of a comma-separated list)."""
        for column, value in filters.items():
            if value is None:
                continue
            if isinstance(value, AtLeast):
                self.where.append(sql.SQL("{} >= %s").format(sql.Identifier("r", column)))
                value = value.value
            elif isinstance(value, ListHas):
                self.where.append(sql.SQL("%s = ANY(string_to_array({}, ','))").format(sql.Identifier("r", column)))
                value = value.value
            else:
                self.where.append(sql.SQL("{} = %s").format(sql.Identifier("r", column)))
            self.params.append(value)
        return self

    def after(self, key_values: list[Any] | None) -> Query:
        """Keyset: rows strictly after this key, in key order."""
        if key_values:
            keys = sql.SQL(", ").join(sql.Identifier("r", k) for k in self.entity.key)
            marks = sql.SQL(", ").join(sql.Placeholder() * len(key_values))
            self.where.append(sql.SQL("({}) > ({})").format(keys, marks))
            self.params += key_values
        return self

    def condition(self) -> sql.Composable:
        return sql.SQL(" AND ").join(self.where) if self.where else sql.SQL("true")

    def source(self) -> sql.Composable:
        return sql.SQL("{} AS r").format(sql.Identifier(*self.entity.table))

    def select(self, expr: sql.Composable, order: sql.Composable | None = None, limit: int | None = None,
               offset: int = 0) -> tuple[sql.Composable, list[Any]]:
        """SELECT expr, key columns … in key order (or `order`), with LIMIT/OFFSET."""
        keys = [sql.Identifier("r", k) for k in self.entity.key]
        statement = sql.SQL("SELECT {}, {} FROM {} WHERE {} ORDER BY {}").format(
            expr, sql.SQL(", ").join(keys), self.source(), self.condition(),
            order or sql.SQL(", ").join(keys))
        params = list(self.params)
        if limit is not None:
            statement += sql.SQL(" LIMIT %s")
            params.append(limit)
        if offset:
            statement += sql.SQL(" OFFSET %s")
            params.append(offset)
        return statement, params

    def csv(self, columns: list[str] | None = None, limit: int | None = None, offset: int = 0) -> sql.Composable:
        """COPY … TO STDOUT of the same rows (values bound client-side by psycopg, safely quoted)."""
        chosen = (sql.SQL(", ").join(sql.Identifier("r", c) for c in columns or self.entity.columns)
                  if self.entity.contract else sql.SQL("r.*"))
        keys = sql.SQL(", ").join(sql.Identifier("r", k) for k in self.entity.key)
        inner = sql.SQL("SELECT {} FROM {} WHERE {} ORDER BY {}").format(chosen, self.source(), self.condition(), keys)
        if limit is not None:
            inner += sql.SQL(" LIMIT {}").format(sql.Literal(limit))
        if offset:
            inner += sql.SQL(" OFFSET {}").format(sql.Literal(offset))
        return sql.SQL("COPY ({}) TO STDOUT WITH (FORMAT csv, HEADER)").format(inner)


# --- keyset cursors -------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, (date, datetime)) else value


def encode_cursor(values: tuple[Any, ...] | list[Any]) -> str:
    raw = json.dumps([_plain(v) for v in values], separators=(",", ":"), default=str).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def parse_typed(value: Any, contract_type: str) -> Any:
    if contract_type == "date":
        return date.fromisoformat(value)
    if contract_type == "timestamp":
        parsed = datetime.fromisoformat(value)
        if parsed.tzinfo is None:
            raise ValueError("timestamp without offset")
        return parsed
    if contract_type == "long":
        if not isinstance(value, int) or isinstance(value, bool) or not -2**63 <= value < 2**63:
            raise ValueError("not a 64-bit integer")
        return value
    if not isinstance(value, str) or len(value) > 256 or "\x00" in value:
        raise ValueError("not a short string")
    return value


def decode_cursor(entity: EntitySet, cursor: str | None, field_name: str = "cursor") -> list[Any] | None:
    if not cursor:
        return None
    try:
        values = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(values, list) or len(values) != len(entity.key):
            raise ValueError("wrong length")
        return [parse_typed(v, t) for v, t in zip(values, entity.key_types)]
    except (ValueError, TypeError, UnicodeDecodeError):
        raise invalid(field_name, "is not a cursor this API wrote (use the Link header's URL)") from None
