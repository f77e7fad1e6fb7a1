"""``/stats/dashboard`` and ``/stats/storage``: numbers scoped to the caller."""

from __future__ import annotations

from services.api.domain import stats as domain
from services.api.schemas.stats import Dashboard, DashboardQuery, StatsQuery, StorageStats
from services.api.web.endpoint import Call, Endpoints, NoBody

routes = Endpoints("stats")


@routes.get(
    "/stats/dashboard",
    query=DashboardQuery,
    response=Dashboard,
    summary="Backups by status, success rates, last successes, overdue databases, next runs",
    errors=(404,),
)
async def dashboard(call: Call[NoBody, DashboardQuery]) -> Dashboard:
    async with call.ctx.transaction() as session:
        return await domain.dashboard(
            session,
            call.principal,
            call.query.project_id,
            now=call.ctx.clock(),
            next_runs=call.query.next_runs,
        )


@routes.get(
    "/stats/storage",
    query=StatsQuery,
    response=StorageStats,
    summary="Bytes and copies stored, per project and per destination",
    errors=(404,),
)
async def storage(call: Call[NoBody, StatsQuery]) -> StorageStats:
    async with call.ctx.transaction() as session:
        return await domain.storage(
            session, call.principal, call.query.project_id, now=call.ctx.clock()
        )
