"""``/schedules`` and ``/cron/preview``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from services.api.domain import schedules as domain
from services.api.schemas.schedules import (
    CronPreview,
    CronPreviewQuery,
    RunTime,
    ScheduleCreate,
    ScheduleDetail,
    ScheduleListQuery,
    ScheduleOut,
    ScheduleUpdate,
)
from services.api.web.endpoint import Call, Endpoints, NoBody, NoQuery
from services.api.web.pagination import Page
from services.common.cron import Slot, describe, next_slots
from services.common.retention_policy import RetentionPolicy

routes = Endpoints("schedules")

UPCOMING = 5
_COLUMNS = (
    "id",
    "database_id",
    "name",
    "cron",
    "timezone",
    "enabled",
    "compression",
    "compression_level",
    "timeout_s",
    "overlap_policy",
    "verify",
    "encryption",
    "encryption_recipient",
    "created_at",
    "updated_at",
)


def run_time(slot: Slot) -> RunTime:
    return RunTime(utc=slot.utc, local=slot.local, shifted=slot.shifted)


def _fields(view: domain.ScheduleView, upcoming: list[Slot]) -> dict[str, object]:
    schedule = view.schedule
    return {
        **{column: getattr(schedule, column) for column in _COLUMNS},
        "project_id": view.project_id,
        "destination_ids": view.destination_ids,
        "retention": RetentionPolicy.from_stored(schedule.retention),
        "description": domain.description(schedule),
        "next_run_at": upcoming[0].utc if upcoming else None,
    }


def schedule_out(view: domain.ScheduleView, now: datetime) -> ScheduleOut:
    return ScheduleOut.model_validate(_fields(view, domain.upcoming(view.schedule, now, 1)))


def schedule_detail(view: domain.ScheduleView, now: datetime) -> ScheduleDetail:
    upcoming = domain.upcoming(view.schedule, now, UPCOMING)
    return ScheduleDetail.model_validate(
        {**_fields(view, upcoming), "upcoming": [run_time(s) for s in upcoming]}
    )


def _audit(call: Call[Any, Any], view: domain.ScheduleView) -> None:
    call.audit.target("schedule", view.schedule.id, view.project_id)
    call.audit.details["name"] = view.schedule.name


@routes.get(
    "/schedules",
    query=ScheduleListQuery,
    response=Page[ScheduleOut],
    summary="List the schedules the caller may see",
)
async def list_schedules(call: Call[NoBody, ScheduleListQuery]) -> Page[ScheduleOut]:
    async with call.ctx.transaction() as session:
        views, cursor, total = await domain.list_schedules(
            session,
            call.principal,
            call.query,
            database_id=call.query.database_id,
            project_id=call.query.project_id,
            enabled=call.query.enabled,
        )
    now = call.ctx.clock()
    return Page[ScheduleOut](
        items=[schedule_out(v, now) for v in views], next_cursor=cursor, total=total
    )


@routes.post(
    "/schedules",
    body=ScheduleCreate,
    response=ScheduleDetail,
    status=201,
    summary="Create a schedule (operator)",
    action="schedule.create",
    errors=(403, 404, 409),
)
async def create_schedule(call: Call[ScheduleCreate, NoQuery]) -> ScheduleDetail:
    async with call.ctx.transaction() as session:
        view, event = await domain.create_schedule(session, call.principal, call.body)
    _audit(call, view)
    await domain.publish_change(call.ctx.nc, event)
    return schedule_detail(view, call.ctx.clock())


@routes.get(
    "/schedules/{id}",
    response=ScheduleDetail,
    summary="Get a schedule with its next runs",
)
async def get_schedule(call: Call[NoBody, NoQuery]) -> ScheduleDetail:
    schedule_id = call.path_uuid("id", domain.SCHEDULE)
    async with call.ctx.transaction() as session:
        view = await domain.get_schedule(session, call.principal, schedule_id)
    return schedule_detail(view, call.ctx.clock())


@routes.put(
    "/schedules/{id}",
    body=ScheduleUpdate,
    response=ScheduleDetail,
    summary="Change a schedule (operator); fields not sent keep their values",
    action="schedule.update",
    errors=(403, 409),
)
async def update_schedule(call: Call[ScheduleUpdate, NoQuery]) -> ScheduleDetail:
    schedule_id = call.path_uuid("id", domain.SCHEDULE)
    call.audit.target("schedule", schedule_id)
    call.audit.details["fields"] = sorted(call.body.model_fields_set)
    async with call.ctx.transaction() as session:
        view, event = await domain.update_schedule(session, call.principal, schedule_id, call.body)
    _audit(call, view)
    await domain.publish_change(call.ctx.nc, event)
    return schedule_detail(view, call.ctx.clock())


@routes.delete(
    "/schedules/{id}",
    summary="Delete a schedule (operator); its backups stay",
    action="schedule.delete",
    errors=(403,),
)
async def delete_schedule(call: Call[NoBody, NoQuery]) -> None:
    schedule_id = call.path_uuid("id", domain.SCHEDULE)
    call.audit.target("schedule", schedule_id)
    async with call.ctx.transaction() as session:
        event = await domain.delete_schedule(session, call.principal, schedule_id)
    call.audit.target("schedule", schedule_id, event.project_id)
    await domain.publish_change(call.ctx.nc, event)


async def _set_enabled(call: Call[NoBody, NoQuery], enabled: bool) -> ScheduleDetail:
    schedule_id = call.path_uuid("id", domain.SCHEDULE)
    call.audit.target("schedule", schedule_id)
    async with call.ctx.transaction() as session:
        view, event = await domain.set_enabled(session, call.principal, schedule_id, enabled)
    _audit(call, view)
    call.audit.details["changed"] = event is not None
    if event is not None:
        await domain.publish_change(call.ctx.nc, event)
    return schedule_detail(view, call.ctx.clock())


@routes.post(
    "/schedules/{id}/enable",
    response=ScheduleDetail,
    summary="Enable a schedule (operator)",
    action="schedule.enable",
    errors=(403,),
)
async def enable_schedule(call: Call[NoBody, NoQuery]) -> ScheduleDetail:
    return await _set_enabled(call, True)


@routes.post(
    "/schedules/{id}/disable",
    response=ScheduleDetail,
    summary="Disable a schedule (operator); it stops firing at once",
    action="schedule.disable",
    errors=(403,),
)
async def disable_schedule(call: Call[NoBody, NoQuery]) -> ScheduleDetail:
    return await _set_enabled(call, False)


@routes.get(
    "/cron/preview",
    query=CronPreviewQuery,
    response=CronPreview,
    summary="The next run times of a cron in a time zone, and the cron in words",
)
async def preview_cron(call: Call[NoBody, CronPreviewQuery]) -> CronPreview:
    query = call.query
    after = query.after or call.ctx.clock()
    slots = next_slots(query.expr, query.tz, after, query.count)
    return CronPreview(
        expr=query.expr,
        timezone=query.tz,
        description=describe(query.expr),
        runs=[run_time(s) for s in slots],
    )
