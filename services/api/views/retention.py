"""``/schedules/{id}/retention/preview``: retention, previewed (nothing is deleted)."""

from __future__ import annotations

from services.api.domain import retention as domain
from services.api.schemas.retention import RetentionPreview, RetentionPreviewQuery
from services.api.web.endpoint import Call, Endpoints, NoBody

routes = Endpoints("retention")


@routes.get(
    "/schedules/{id}/retention/preview",
    query=RetentionPreviewQuery,
    response=RetentionPreview,
    summary="What the schedule's retention policy would keep and delete now, and why "
    "(viewer; nothing is deleted)",
    errors=(404,),
)
async def preview(call: Call[NoBody, RetentionPreviewQuery]) -> RetentionPreview:
    schedule_id = call.path_uuid("id", "schedule")
    async with call.ctx.transaction() as session:
        return await domain.preview(
            session,
            call.principal,
            schedule_id,
            now=call.ctx.clock(),
            failed_run_retention_days=call.ctx.settings.failed_run_retention_days,
            limit=call.query.limit,
        )
