"""Keyset pagination: ``limit`` (at most 200) and an opaque ``cursor``; lists are
ordered newest first by ``(created_at, id)`` (or another unique key), so pages stay
stable while rows are added."""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import ColumnElement, Select, bindparam, func, select, tuple_
from sqlalchemy.engine import Result
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from services.api.web.errors import ValidationFailed

MAX_LIMIT = 200
DEFAULT_LIMIT = 50
T = TypeVar("T")


class PageQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limit: int = Field(default=DEFAULT_LIMIT, ge=1, le=MAX_LIMIT, description="Items per page")
    cursor: str | None = Field(
        default=None, max_length=512, description="next_cursor of the previous page"
    )


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(description="Pass as cursor for the next page; null at the end")
    total: int | None = Field(default=None, description="Matching items, where cheap to count")


@dataclass(frozen=True)
class RowsPage:
    """A page of plain rows (dicts of UUIDs, datetimes, enums, numbers, strings),
    rendered to JSON as it is, without building and re-validating a model per item:
    for a page of 50 that is most of a list request's CPU. The route's ``Page[...]``
    model still documents it, and in tests every rendered page is checked against
    that model (``endpoint.CHECK_ROWS_PAGES``)."""

    items: list[dict[str, Any]]
    next_cursor: str | None
    total: int | None = None


def encode_cursor(values: tuple[Any, ...]) -> str:
    plain = [v.isoformat() if isinstance(v, datetime) else str(v) for v in values]
    return base64.urlsafe_b64encode(json.dumps(plain).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, kinds: tuple[type, ...]) -> tuple[Any, ...]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        plain = json.loads(base64.urlsafe_b64decode(padded.encode()))
        if not isinstance(plain, list) or len(plain) != len(kinds):
            raise ValueError
        return tuple(_parse(kind, value) for kind, value in zip(kinds, plain, strict=True))
    except (ValueError, TypeError, OverflowError, json.JSONDecodeError):
        raise ValidationFailed(
            "Invalid cursor", fields={"cursor": "use next_cursor from the previous page"}
        ) from None


def _parse(kind: type, value: object) -> Any:
    if not isinstance(value, str):
        raise ValueError
    if kind is datetime:
        parsed = datetime.fromisoformat(value)
        if parsed.tzinfo is None:
            raise ValueError
        return parsed.astimezone(UTC)
    if kind is uuid.UUID:
        return uuid.UUID(value)
    if kind is int:
        return int(value)
    return value


Order = tuple[InstrumentedAttribute[Any], InstrumentedAttribute[Any]]


def keyset(
    stmt: Select[Any],
    page: PageQuery,
    order: Order,
    kinds: tuple[type, type] = (datetime, uuid.UUID),
) -> Select[Any]:
    """``stmt`` restricted to the rows after ``page.cursor``, newest first, one row more
    than a page (to know whether another page follows)."""
    first, second = order
    if page.cursor:
        stmt = stmt.where(after_cursor(order, decode_cursor(page.cursor, kinds)))
    return stmt.order_by(first.desc(), second.desc()).limit(page.limit + 1)


def after_cursor(order: Order, values: tuple[Any, ...]) -> ColumnElement[bool]:
    """Rows that come after the cursor's row, newest first. A row-value comparison:
    written as ``a < x OR (a = x AND b < y)``, SQLite plans it as two index searches
    and a sort of everything older than the cursor (160 ms a page deep into 100,000
    rows, instead of 0.1 ms)."""
    first, second = order
    return tuple_(first, second) < tuple_(*values)


# Lists whose statements are built once and bound per request (a statement built and
# compiled afresh costs more than SQLite's work for a page) use these three.


def keyset_bound(stmt: Select[Any], order: Order, *, cursor: bool) -> Select[Any]:
    """:func:`keyset` with the cursor and the limit as bound parameters (values:
    :func:`page_params`)."""
    first, second = order
    if cursor:
        stmt = stmt.where(after_cursor_bound(order))
    return stmt.order_by(first.desc(), second.desc()).limit(bindparam("read_limit"))


def after_cursor_bound(order: Order) -> ColumnElement[bool]:
    """:func:`after_cursor` with the cursor's values bound (``order`` may be the
    columns of an alias)."""
    first, second = order
    values = (
        bindparam("cursor_first", type_=first.type),
        bindparam("cursor_second", type_=second.type),
    )
    return tuple_(first, second) < tuple_(*values)


def page_params(
    page: PageQuery, kinds: tuple[type, type] = (datetime, uuid.UUID)
) -> dict[str, Any]:
    """The values of a bound keyset: one row more than a page (to know whether
    another follows), the page size, and the cursor's values."""
    params: dict[str, Any] = {"read_limit": page.limit + 1, "page_limit": page.limit}
    if page.cursor:
        params["cursor_first"], params["cursor_second"] = decode_cursor(page.cursor, kinds)
    return params


def column_names(result: Result[Any]) -> list[str]:
    """The names of a result's columns as exact ``str`` (a quoted name, such as
    ``trigger``, is a subclass, which orjson refuses as a key)."""
    keys = result.keys()
    return [str(key) for key in keys]


def plain_rows(result: Result[Any]) -> list[dict[str, Any]]:
    """Every row of ``result`` as a dict by column name, ready for a RowsPage."""
    names = column_names(result)
    return [dict(zip(names, row, strict=True)) for row in result.all()]


LIKE_ESCAPE = "/"


def prefix_pattern(text: str) -> str:
    """A LIKE pattern (``escape=LIKE_ESCAPE``) matching values that start with
    ``text``; its ``%`` and ``_`` stand for themselves."""
    escaped = text.replace(LIKE_ESCAPE, LIKE_ESCAPE * 2)
    return escaped.replace("%", f"{LIKE_ESCAPE}%").replace("_", f"{LIKE_ESCAPE}_") + "%"


def contains_pattern(text: str) -> str:
    """A LIKE pattern (``escape=LIKE_ESCAPE``) matching values containing ``text``."""
    return "%" + prefix_pattern(text)


def cut(rows: list[Any], page: PageQuery, order: Order) -> tuple[list[Any], str | None]:
    """The page of ``rows`` (read with :func:`keyset`) and the cursor of the next one;
    a row is an entity or a row naming the order columns by their keys."""
    if len(rows) <= page.limit:
        return rows, None
    rows = rows[: page.limit]
    last = rows[-1]
    if isinstance(last, dict):
        return rows, encode_cursor(tuple(last[column.key] for column in order))
    return rows, encode_cursor(tuple(getattr(last, column.key) for column in order))


async def paginate(
    session: AsyncSession,
    stmt: Select[Any],
    page: PageQuery,
    *,
    order: Order,
    kinds: tuple[type, type] = (datetime, uuid.UUID),
    count: bool = True,
) -> tuple[list[Any], str | None, int | None]:
    """Rows of ``stmt`` (one entity per row) newest first by ``order``; returns
    ``(rows, next_cursor, total)``."""
    total = None
    if count:
        total = await session.scalar(
            select(func.count()).select_from(stmt.order_by(None).subquery())
        )
    rows = list((await session.scalars(keyset(stmt, page, order, kinds))).all())
    return (*cut(rows, page, order), total)
