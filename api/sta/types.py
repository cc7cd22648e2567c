"""The value types of the expression compiler: a compiled expression and its errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from psycopg import sql
from psycopg.sql import Composable

from api.sta import geo

_NOCONST = object()

TYPE_NAMES = {
    "string": "a string",
    "number": "a number",
    "bool": "a boolean",
    "datetime": "a date-time",
    "date": "a date",
    "time": "a time of day",
    "duration": "a duration",
    "geometry": "a geometry",
    "json": "a JSON value",
    "interval": "a time interval",
    "null": "null",
}


class CompileError(ValueError):
    """An expression that is not valid for the entity it applies to; the message says why."""


@dataclass
class Expr:
    type: str
    sql: Composable = field(default_factory=lambda: sql.SQL("NULL"))
    const: Any = _NOCONST  # the Python value, for literals
    geom: geo.Geometry | None = None  # a geometry literal
    bounds: tuple[Composable, Composable] | None = None  # an interval's ends
    obs_id: bool = False  # the id of an Observation (compared by its parts)
    id_parts: tuple[Composable, Composable] | None = None  # (datastream id, ts)

    @property
    def is_const(self) -> bool:
        return self.const is not _NOCONST


def err(message: str) -> CompileError:
    return CompileError(message)
