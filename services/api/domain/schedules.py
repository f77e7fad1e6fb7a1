"""Schedules (the service layer shared by the API and the pages).

A schedule belongs to a database and through it to a project: viewers read it,
operators (or higher) change it. Each change returns the ``ScheduleChanged`` event
to publish; the caller publishes it with :func:`publish_change` *after* its
transaction committed, so a scheduler reloading the row on the event sees the
change. A publish that fails is logged and the change stands: schedulers also
reconcile with the metadata DB periodically.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime

import nats.errors
from nats.aio.client import Client as NATS
from sqlalchemy import delete, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from proto.schedule_events import ScheduleChanged
from proto.values import ScheduleChange
from services.api.auth.principal import Principal
from services.api.domain.access import require_role, visible_projects
from services.api.domain.destinations import DEFAULT_ID as DEFAULT_DESTINATION_ID
from services.api.schemas.schedules import ScheduleCreate, ScheduleUpdate, level_problem
from services.api.web.errors import Conflict, ValidationFailed, not_found
from services.api.web.pagination import PageQuery, paginate
from services.common.cron import CronError, Slot, describe, next_slots
from services.common.db.enums import DestinationKind, ProjectRole
from services.common.db.models import Database, Destination, Schedule, schedule_destinations
from services.common.streams import StreamSetupError, publish

log = logging.getLogger(__name__)

SCHEDULE = "schedule"
PUBLISH_TIMEOUT_S = 3.0
_PLAIN_FIELDS = (
    "name",
    "cron",
    "timezone",
    "enabled",
    "compression",
    "timeout_s",
    "overlap_policy",
    "verify",
    "encryption",
)


@dataclass(frozen=True)
class ScheduleView:
    """A schedule with what its responses need besides its own columns."""

    schedule: Schedule
    project_id: uuid.UUID
    destination_ids: list[uuid.UUID]


# -- reading ----------------------------------------------------------------------------


async def get_schedule(
    session: AsyncSession,
    principal: Principal,
    schedule_id: uuid.UUID,
    at_least: ProjectRole = ProjectRole.VIEWER,
) -> ScheduleView:
    row = (
        await session.execute(
            select(Schedule, Database.project_id)
            .join(Database, Database.id == Schedule.database_id)
            .where(Schedule.id == schedule_id)
        )
    ).one_or_none()
    if row is None:
        raise not_found(SCHEDULE)
    schedule, project_id = row
    await require_role(session, principal, project_id, at_least, SCHEDULE)
    return ScheduleView(schedule, project_id, (await _destination_ids(session, [schedule.id]))[0])


async def list_schedules(
    session: AsyncSession,
    principal: Principal,
    page: PageQuery,
    *,
    database_id: uuid.UUID | None,
    project_id: uuid.UUID | None,
    enabled: bool | None,
) -> tuple[list[ScheduleView], str | None, int | None]:
    stmt = (
        select(Schedule)
        .join(Database, Database.id == Schedule.database_id)
        .where(visible_projects(principal, Database.project_id))
    )
    if database_id is not None:
        await _database(session, principal, database_id, ProjectRole.VIEWER)
        stmt = stmt.where(Schedule.database_id == database_id)
    if project_id is not None:
        await require_role(session, principal, project_id, ProjectRole.VIEWER, "project")
        stmt = stmt.where(Database.project_id == project_id)
    if enabled is not None:
        stmt = stmt.where(Schedule.enabled.is_(enabled))
    rows, cursor, total = await paginate(
        session, stmt, page, order=(Schedule.created_at, Schedule.id)
    )
    found = await session.execute(
        select(Database.id, Database.project_id).where(
            Database.id.in_({s.database_id for s in rows})
        )
    )
    projects = {row.id: row.project_id for row in found}
    destinations = await _destination_ids(session, [s.id for s in rows])
    views = [
        ScheduleView(s, projects[s.database_id], ids)
        for s, ids in zip(rows, destinations, strict=True)
    ]
    return views, cursor, total


def upcoming(schedule: Schedule, now: datetime, count: int) -> list[Slot]:
    """The next runs of an enabled schedule (none when disabled, or if the stored
    cron or zone no longer passes validation)."""
    if not schedule.enabled:
        return []
    try:
        return next_slots(schedule.cron, schedule.timezone, now, count)
    except CronError:
        log.warning("schedule %s has an invalid cron or time zone", schedule.id)
        return []


def description(schedule: Schedule) -> str:
    try:
        return describe(schedule.cron)
    except CronError as exc:
        return f"invalid: {exc}"


# -- changing ---------------------------------------------------------------------------


async def create_schedule(
    session: AsyncSession, principal: Principal, body: ScheduleCreate
) -> tuple[ScheduleView, ScheduleChanged]:
    database = await _database(session, principal, body.database_id, ProjectRole.OPERATOR)
    destination_ids = await _usable_destinations(session, database.project_id, body.destination_ids)
    await _check_name_free(session, database.id, body.name, None)
    schedule = Schedule(
        database_id=database.id,
        name=body.name,
        cron=body.cron,
        timezone=body.timezone,
        enabled=body.enabled,
        compression=body.compression,
        compression_level=body.compression_level,
        timeout_s=body.timeout_s,
        overlap_policy=body.overlap_policy,
        retention=body.retention.to_stored(),
        verify=body.verify,
        encryption=body.encryption,
        encryption_recipient=body.encryption_recipient,
    )
    await _save(session, schedule)
    await _set_destinations(session, schedule.id, destination_ids, replace=False)
    view = ScheduleView(schedule, database.project_id, destination_ids)
    return view, _event(view, ScheduleChange.CREATED, principal)


async def update_schedule(
    session: AsyncSession, principal: Principal, schedule_id: uuid.UUID, body: ScheduleUpdate
) -> tuple[ScheduleView, ScheduleChanged]:
    view = await get_schedule(session, principal, schedule_id, ProjectRole.OPERATOR)
    schedule, sent = view.schedule, body.model_fields_set
    destination_ids = view.destination_ids
    if body.destination_ids is not None:
        destination_ids = await _usable_destinations(session, view.project_id, body.destination_ids)
    if body.name is not None:
        await _check_name_free(session, schedule.database_id, body.name, schedule.id)
    level = schedule.compression_level
    if "compression_level" in sent:
        level = body.compression_level
    elif body.compression is not None and body.compression is not schedule.compression:
        level = None  # a new algorithm starts at its default level
    compression = body.compression or schedule.compression
    problem = level_problem(compression, level)
    if problem:
        raise ValidationFailed(problem, fields={"compression_level": problem})
    for field in _PLAIN_FIELDS:  # null or missing: keep (none of these may be null)
        if getattr(body, field) is not None:
            setattr(schedule, field, getattr(body, field))
    schedule.compression_level = level
    if body.retention is not None:
        schedule.retention = body.retention.to_stored()
    await _save(session, schedule)
    if set(destination_ids) != set(view.destination_ids):
        await _set_destinations(session, schedule.id, destination_ids, replace=True)
    view = ScheduleView(schedule, view.project_id, destination_ids)
    return view, _event(view, ScheduleChange.UPDATED, principal)


async def set_enabled(
    session: AsyncSession, principal: Principal, schedule_id: uuid.UUID, enabled: bool
) -> tuple[ScheduleView, ScheduleChanged | None]:
    """Enable or disable; no event when the schedule already was in that state."""
    view = await get_schedule(session, principal, schedule_id, ProjectRole.OPERATOR)
    if view.schedule.enabled is enabled:
        return view, None
    view.schedule.enabled = enabled
    await _save(session, view.schedule)
    change = ScheduleChange.ENABLED if enabled else ScheduleChange.DISABLED
    return view, _event(view, change, principal)


async def delete_schedule(
    session: AsyncSession, principal: Principal, schedule_id: uuid.UUID
) -> ScheduleChanged:
    view = await get_schedule(session, principal, schedule_id, ProjectRole.OPERATOR)
    # Its destination links and scheduler cursor go by ON DELETE CASCADE.
    await session.execute(delete(Schedule).where(Schedule.id == schedule_id))
    return _event(view, ScheduleChange.DELETED, principal, enabled=False)


@dataclass(frozen=True)
class GoneSchedule:
    """A schedule deleted along with its database or project."""

    schedule_id: uuid.UUID
    database_id: uuid.UUID


async def announce_gone(
    nc: NATS | None, project_id: uuid.UUID, gone: list[GoneSchedule], by: uuid.UUID
) -> None:
    """Tell schedulers about schedules that went with a database or a project (best
    effort, as for every change: schedulers also reconcile with the metadata DB)."""
    for schedule in gone:
        await publish_change(nc, ScheduleChanged(
            schedule_id=schedule.schedule_id, project_id=project_id,
            database_id=schedule.database_id, change=ScheduleChange.DELETED, enabled=False,
            changed_by=by,
        ))  # fmt: skip


async def publish_change(nc: NATS | None, event: ScheduleChanged) -> bool:
    """Publish a committed change; on failure log a warning and return False (the
    change stands, and schedulers reconcile with the metadata DB periodically)."""
    if nc is None or not nc.is_connected:
        log.warning(
            "schedule %s %s: NATS is not connected, so schedulers apply it at their next "
            "reconciliation",
            event.schedule_id,
            event.change.value,
        )
        return False
    try:
        await publish(nc, event, ack_timeout_s=PUBLISH_TIMEOUT_S)
    except (nats.errors.Error, StreamSetupError, TimeoutError, OSError) as exc:
        log.warning(
            "schedule %s %s: could not publish %s (%s), so schedulers apply it at their "
            "next reconciliation",
            event.schedule_id,
            event.change.value,
            event.SUBJECT,
            exc,
        )
        return False
    return True


# -- helpers ----------------------------------------------------------------------------


def _event(
    view: ScheduleView, change: ScheduleChange, principal: Principal, enabled: bool | None = None
) -> ScheduleChanged:
    return ScheduleChanged(
        schedule_id=view.schedule.id,
        project_id=view.project_id,
        database_id=view.schedule.database_id,
        change=change,
        enabled=view.schedule.enabled if enabled is None else enabled,
        changed_by=principal.user_id,
    )


async def _database(
    session: AsyncSession, principal: Principal, database_id: uuid.UUID, at_least: ProjectRole
) -> Database:
    database = await session.get(Database, database_id)
    if database is None:
        raise not_found("database")
    await require_role(session, principal, database.project_id, at_least, "database")
    return database


async def _usable_destinations(
    session: AsyncSession, project_id: uuid.UUID, wanted: list[uuid.UUID] | None
) -> list[uuid.UUID]:
    """``wanted`` if each is enabled and global or of ``project_id``; the default
    destination when ``wanted`` is None."""
    if wanted is None:
        return [await _default_destination(session)]
    found = {
        d.id: d
        for d in await session.scalars(select(Destination).where(Destination.id.in_(wanted)))
    }
    problems: dict[str, str] = {}
    for index, destination_id in enumerate(wanted):
        destination = found.get(destination_id)
        where = f"destination_ids.{index}"
        if destination is None or destination.project_id not in (None, project_id):
            problems[where] = "no such destination for this database's project"
        elif not destination.enabled:
            problems[where] = f"destination {destination.name!r} is disabled"
        elif destination_id in wanted[:index]:
            problems[where] = "listed twice"
    if problems:
        raise ValidationFailed("Some destinations cannot be used", fields=problems)
    return sorted(wanted)


async def _default_destination(session: AsyncSession) -> uuid.UUID:
    """The built-in default destination, else the only enabled global local one."""
    rows = list(
        await session.scalars(
            select(Destination.id).where(
                Destination.project_id.is_(None),
                Destination.enabled.is_(True),
                Destination.kind == DestinationKind.LOCAL,
            )
        )
    )
    if DEFAULT_DESTINATION_ID in rows:
        return DEFAULT_DESTINATION_ID
    if len(rows) == 1:
        return rows[0]
    message = "choose a destination: there is no default one to use"
    raise ValidationFailed(message, fields={"destination_ids": message})


async def _destination_ids(
    session: AsyncSession, schedule_ids: list[uuid.UUID]
) -> list[list[uuid.UUID]]:
    """Each schedule's destinations (sorted), in the order of ``schedule_ids``."""
    found: dict[uuid.UUID, list[uuid.UUID]] = {i: [] for i in schedule_ids}
    if schedule_ids:
        rows = await session.execute(
            select(schedule_destinations.c.schedule_id, schedule_destinations.c.destination_id)
            .where(schedule_destinations.c.schedule_id.in_(schedule_ids))
            .order_by(schedule_destinations.c.destination_id)
        )
        for row in rows:
            found[row.schedule_id].append(row.destination_id)
    return [found[i] for i in schedule_ids]


async def _set_destinations(
    session: AsyncSession, schedule_id: uuid.UUID, ids: list[uuid.UUID], *, replace: bool
) -> None:
    if replace:
        await session.execute(
            delete(schedule_destinations).where(schedule_destinations.c.schedule_id == schedule_id)
        )
    await session.execute(
        insert(schedule_destinations),
        [{"schedule_id": schedule_id, "destination_id": d} for d in ids],
    )


async def _check_name_free(
    session: AsyncSession, database_id: uuid.UUID, name: str, own_id: uuid.UUID | None
) -> None:
    stmt = select(Schedule.id).where(Schedule.database_id == database_id, Schedule.name == name)
    if own_id is not None:
        stmt = stmt.where(Schedule.id != own_id)
    if await session.scalar(stmt) is not None:
        raise _name_taken()


async def _save(session: AsyncSession, schedule: Schedule) -> None:
    """Flush in a savepoint, so a name taken meanwhile is a 409, not a broken session."""
    try:
        async with session.begin_nested():
            session.add(schedule)
    except IntegrityError:
        raise _name_taken() from None


def _name_taken() -> Conflict:
    return Conflict(
        "a schedule with this name exists for the database",
        fields={"name": "already taken for this database"},
    )
