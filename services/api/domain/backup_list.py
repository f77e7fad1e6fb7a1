"""Listing backups: a page of the runs a caller sees, newest first, each with its
copies, from one statement.

Every statement here is built once per *shape* — the kind of caller, which filters
are set, whether a cursor is given — and run with the request's values as bound
parameters. Building and compiling a statement of this size costs several times
SQLite's own work for the page (about 1 ms against 0.3 ms), so a list request
that built its statement afresh spent most of its time there.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime
from functools import cache
from typing import Any, Final

from sqlalchemy import ColumnElement, Select, bindparam, func, literal, select, type_coerce
from sqlalchemy.engine import Result
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from proto.values import Trigger
from services.api.auth.principal import Principal
from services.api.domain.access import Visibility, visibility_of, visibility_params
from services.api.domain.access import visible_projects_bound as visible
from services.api.web.pagination import (
    PageQuery,
    after_cursor_bound,
    column_names,
    cut,
    keyset_bound,
    page_params,
)
from services.common.db.enums import BackupStatus
from services.common.db.models import Backup, BackupCopy, Database
from services.common.db.types import RepeatedUuid, UTCDateTime


@dataclass(frozen=True)
class Filters:
    project_id: uuid.UUID | None = None
    database_id: uuid.UUID | None = None
    schedule_id: uuid.UUID | None = None
    status: BackupStatus | None = None
    trigger: Trigger | None = None
    since: datetime | None = None
    until: datetime | None = None


BackupRow = dict[str, Any]
"""A listed backup: its list columns, ``project_id``, and ``copies`` (dicts:
destination, status, size, when stored)."""


# What a list shows: every column but the log tail and the manifest (the detail's).
LIST_COLUMNS: Final = tuple(
    getattr(Backup, name)
    for name in ("id", "database_id", "schedule_id", "trigger", "status", "slot_at",
                 "queued_at", "started_at", "finished_at", "attempts", "bytes_in", "bytes_out",
                 "sha256", "artifact_key", "compression", "error_code", "error_message",
                 "warning", "verified_at", "verify_status", "verify_message")
)  # fmt: skip
LIST_ORDER: Final = (Backup.queued_at, Backup.id)
COPY_FIELDS: Final = ("destination_id", "status", "size_bytes", "stored_at")


def _repeated(column: Any, name: str) -> Any:
    """A UUID column whose values repeat down a page, parsed once per value."""
    return type_coerce(column, RepeatedUuid()).label(name)


# As selected: the ids that repeat from row to row are read as RepeatedUuid.
_SELECTED: Final = (
    *(_repeated(c, c.key) if c.key in {"database_id", "schedule_id"} else c for c in LIST_COLUMNS),
    _repeated(Database.project_id, "project_id"),
)
_COPY_SELECTED: Final = tuple(
    _repeated(BackupCopy.destination_id, "copy_destination_id") if name == "destination_id"
    else getattr(BackupCopy, name).label(f"copy_{name}")
    for name in COPY_FIELDS
)  # fmt: skip
EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Shape:
    """What a list statement's structure depends on (its values are bound)."""

    visibility: Visibility
    project: bool  # filtered to a project
    database: bool  # filtered to a database
    filters: tuple[str, ...]  # the set filters on the backups themselves
    cursor: bool

    @property
    def merged(self) -> bool:
        """Read per visible database (the caller sees part of the backups), rather
        than walking every backup newest first."""
        return self.visibility != "everything" or self.project or self.database


_OWN_FILTERS: Final = ("schedule_id", "status", "trigger", "since", "until")


async def list_backups(
    session: AsyncSession, principal: Principal, page: PageQuery, filters: Filters
) -> tuple[list[BackupRow], str | None, int | None]:
    """A page of backups the caller sees, newest first, each with its copies;
    ``total`` only when the list is one database's (an index count), as counting
    every backup would cost a scan per page."""
    set_filters = {
        f.name: getattr(filters, f.name) for f in fields(filters)
        if getattr(filters, f.name) is not None
    }  # fmt: skip
    shape = Shape(
        visibility=visibility_of(principal),
        project="project_id" in set_filters,
        database="database_id" in set_filters,
        filters=tuple(name for name in _OWN_FILTERS if name in set_filters),
        cursor=bool(page.cursor),
    )
    params = set_filters | visibility_params(principal) | page_params(page)
    connection = await session.connection()  # Core: no ORM step per row
    rows = _with_copies(await connection.execute(_page_statement(shape), params))
    rows, cursor = cut(rows, page, LIST_ORDER)
    total = None
    if shape.database:
        total = await connection.scalar(_count_statement(shape), params)
    return rows, cursor, total


def _with_copies(result: Result[Any]) -> list[BackupRow]:
    """Rows of the page joined to their copies (one per destination) -> one
    ``BackupRow`` per backup, in order."""
    names = column_names(result)
    width = len(names) - len(COPY_FIELDS)
    own = names[:width]
    rows: list[BackupRow] = []
    last_id = None
    copies: list[dict[str, Any]] = []
    for values in result.all():  # one fetch: iterating fetches row by row
        if values[0] != last_id:
            last_id, copies = values[0], []
            rows.append(dict(zip(own, values[:width], strict=True), copies=copies))
        if values[width] is not None:
            copies.append(dict(zip(COPY_FIELDS, values[width:], strict=True)))
    return rows


def _own_conditions(shape: Shape, run: Any = Backup) -> list[ColumnElement[bool]]:
    """The filters on the backups themselves (``run``: the table or an alias),
    and the cursor, as bound parameters."""
    where: list[ColumnElement[bool]] = []
    for name in ("schedule_id", "status", "trigger"):
        if name in shape.filters:
            where.append(getattr(run, name) == bindparam(name))
    if "since" in shape.filters:
        where.append(run.queued_at >= bindparam("since"))
    if "until" in shape.filters:
        where.append(run.queued_at < bindparam("until"))
    if shape.cursor:
        where.append(after_cursor_bound((run.queued_at, run.id)))
    return where


def _scope(shape: Shape, database: Any) -> list[ColumnElement[bool]]:
    """Which databases the list covers: those the caller sees, narrowed by the
    project and database filters."""
    where = [visible(shape.visibility, database.project_id)]
    if shape.project:
        where.append(database.project_id == bindparam("project_id"))
    if shape.database:
        where.append(database.id == bindparam("database_id"))
    return where


@cache
def _page_statement(shape: Shape) -> Select[Any]:
    listed = select(*_SELECTED).join(Database, Database.id == Backup.database_id)
    if shape.merged:
        listed = listed.where(Backup.id.in_(_merged_page_ids(shape)))
    else:
        listed = listed.where(*_own_conditions(shape))
    page = keyset_bound(listed, LIST_ORDER, cursor=False).subquery("listed")
    return (
        select(page, *_COPY_SELECTED)
        .outerjoin(BackupCopy, BackupCopy.backup_id == page.c.id)
        .order_by(page.c.queued_at.desc(), page.c.id.desc(), BackupCopy.destination_id)
    )


def _merged_page_ids(shape: Shape) -> Select[Any]:
    """The ids of a page merged from the covered databases, chosen from the
    (database, queued_at, id) indexes alone: only the page's own rows are then read
    from the table, not every candidate of every database."""
    pick, covered = aliased(Backup, name="pick"), aliased(Database, name="covered")
    # IN over the covered databases' ids (not conditions on a joined row): SQLite
    # then reads each database's index from the merge start on.
    chosen = select(pick.id).where(
        pick.database_id.in_(select(covered.id).where(*_scope(shape, covered))),
        *_own_conditions(shape, pick),
        pick.queued_at >= _merge_start(shape),
    )
    return keyset_bound(chosen, (pick.queued_at, pick.id), cursor=False)


def _merge_start(shape: Shape) -> ColumnElement[datetime]:
    """The newest rows of the databases a caller sees without sorting all their
    backups. Each database's own next page ends at some instant; the database whose
    page ends latest already has more than a page of rows from then on, so no row of
    the page is older than that instant. Reading only from then on touches at most a
    page (and its ties) per database through the (database, queued_at, id) index."""
    run, seen = aliased(Backup, name="run"), aliased(Database, name="seen")
    own_last = (
        select(run.queued_at)
        .where(run.database_id == seen.id, *_own_conditions(shape, run))
        .order_by(run.queued_at.desc())
        .limit(1)
        .offset(bindparam("page_limit"))
        .correlate(seen)
        .scalar_subquery()
    )
    latest = select(func.max(own_last)).where(*_scope(shape, seen)).scalar_subquery()
    # No database has a full page left: every row of theirs may be on the page.
    return func.coalesce(latest, literal(EPOCH, UTCDateTime()))


@cache
def _count_statement(shape: Shape) -> Select[Any]:
    covered = aliased(Database, name="covered")
    return (
        select(func.count())
        .select_from(Backup)
        .where(
            Backup.database_id.in_(select(covered.id).where(*_scope(shape, covered))),
            *_own_conditions(replace(shape, cursor=False)),
        )
    )
