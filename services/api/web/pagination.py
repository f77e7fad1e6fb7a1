"""Keyset pagination: ``limit`` (at most 200) and an opaque ``cursor``; lists are
ordered newest first by ``(created_at, id)`` (or another unique key), so pages stay
stable while rows are added."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import ColumnElement, Select, func, select, tuple_
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


def cut(rows: list[Any], page: PageQuery, order: Order) -> tuple[list[Any], str | None]:
    """The page of ``rows`` (read with :func:`keyset`) and the cursor of the next one;
    a row is an entity or a row naming the order columns by their keys."""
    if len(rows) <= page.limit:
        return rows, None
    rows = rows[: page.limit]
    last = rows[-1]
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
