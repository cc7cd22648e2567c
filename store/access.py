"""Who is asking, and what they may see: the tenancy rules every registry and data query uses.

A :class:`Principal` is the caller: an ``admin`` (the platform operator), a ``municipality``
(one tenant, by NIS code) or a ``reader`` (public data only; also anonymous callers when the
API allows anonymous reads).

* **Read**: a sensor is visible to admins, to its own municipality, and, when its visibility is
  ``public``, to everyone with read access. Data routes filter with :func:`visible_sensors`
  so that every list, export and readings query shares one definition.
* **Write**: only admins and the owning municipality change a sensor, gateway or credential.
* **Not found vs forbidden**: what the caller may not see does not exist for them (404, the
  same answer as for an unknown id); a caller who sees an object it may not change (another
  municipality's public sensor) gets 403.

The registry errors below carry messages for people; ``api/errors.py`` maps them to statuses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from psycopg import sql

Role = Literal["admin", "municipality", "reader"]
ROLES: tuple[Role, ...] = ("admin", "municipality", "reader")


@dataclass(frozen=True, slots=True)
class Principal:
    role: Role
    municipality: str | None = None  # NIS code, for role "municipality" only
    key_id: str | None = None  # None for anonymous callers

    def __post_init__(self) -> None:
        if (self.role == "municipality") != (self.municipality is not None):
            raise ValueError("a municipality principal needs a municipality, others none")

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def may_write(self) -> bool:
        return self.role in ("admin", "municipality")

    def owns(self, municipality: str) -> bool:
        """Whether this caller may change objects of ``municipality``."""
        return self.is_admin or (self.role == "municipality" and self.municipality == municipality)

    def sees(self, municipality: str, visibility: str) -> bool:
        """Whether this caller may read a sensor of ``municipality`` with ``visibility``."""
        return visibility == "public" or self.owns(municipality)


ANONYMOUS = Principal("reader")
ADMIN = Principal("admin")

# The fragment's parameter name; callers merge its params into their own (named) ones.
_VIEWER = "viewer_municipality"


def visible_sensors(
    principal: Principal, alias: str = "sensors"
) -> tuple[sql.Composable, dict[str, Any]]:
    """A boolean SQL condition on ``alias`` (a ``sensors`` row) that holds exactly for the
    sensors ``principal`` may read, and its named parameters. Use it in every query that
    returns sensors or their data, e.g. ``WHERE {visible} AND ...``."""
    t = sql.Identifier(alias)
    if principal.is_admin:
        return sql.SQL("TRUE"), {}
    if principal.role == "municipality":
        return (
            sql.SQL("({t}.visibility = 'public' OR {t}.municipality = {p})").format(
                t=t, p=sql.Placeholder(_VIEWER)
            ),
            {_VIEWER: principal.municipality},
        )
    return sql.SQL("{t}.visibility = 'public'").format(t=t), {}


def owned_by(principal: Principal, column: sql.Composable) -> tuple[sql.Composable, dict[str, Any]]:
    """A condition that ``column`` (a municipality NIS code) is one the principal owns."""
    if principal.is_admin:
        return sql.SQL("TRUE"), {}
    if principal.role == "municipality":
        return sql.SQL("{c} = {p}").format(c=column, p=sql.Placeholder(_VIEWER)), {
            _VIEWER: principal.municipality
        }
    return sql.SQL("FALSE"), {}


# --- errors ---------------------------------------------------------------------------------
class RegistryError(Exception):
    """Base of the registry's refusals; ``str(e)`` is the message for people."""


class NotFound(RegistryError):
    """No such object, or one the caller may not see (the two are indistinguishable)."""

    def __init__(self, kind: str, ident: str) -> None:
        super().__init__(f"unknown {kind} {ident!r}")
        self.kind = kind
        self.ident = ident


class Forbidden(RegistryError):
    """The caller sees the object (or names a tenant) but may not do this to it."""


class Conflict(RegistryError):
    """The request is well-formed but the object's state does not allow it (409)."""


@dataclass(frozen=True, slots=True)
class FieldError:
    """One thing to change in the input: where (``loc`` relative to the body), what."""

    loc: tuple[str | int, ...]
    msg: str
    type: str = "value_error"
    input: Any = None


class Invalid(RegistryError):
    """The input refers to something that does not exist or is taken (422)."""

    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__("; ".join(e.msg for e in errors[:5]))
        self.errors = errors

    @classmethod
    def one(cls, loc: tuple[str | int, ...], msg: str, value: Any = None) -> Invalid:
        return cls([FieldError(loc, msg, input=value)])
