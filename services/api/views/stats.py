"""``/stats/dashboard`` and ``/stats/storage``: numbers scoped to the caller, reused
for ``BM_API_STATS_CACHE_S`` seconds (``domain.stats_cache``)."""

from __future__ import annotations

import uuid
from typing import Any

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
    ctx, who, q = call.ctx, call.principal, call.query
    await _check_scope(call, q.project_id)

    async def compute() -> Dashboard:
        async with ctx.transaction() as session:
            return await domain.dashboard(
                session, who, q.project_id, now=ctx.clock(), next_runs=q.next_runs
            )

    key = ("dashboard", domain.scope_key(who), q.project_id, q.next_runs)
    return await ctx.stats.get(key, ctx.clock(), compute)


@routes.get(
    "/stats/storage",
    query=StatsQuery,
    response=StorageStats,
    summary="Stored bytes and copies, missing and corrupt copies, per project/database/destination",
    errors=(404,),
)
async def storage(call: Call[NoBody, StatsQuery]) -> StorageStats:
    ctx, who, project_id = call.ctx, call.principal, call.query.project_id
    await _check_scope(call, project_id)

    async def compute() -> StorageStats:
        async with ctx.transaction() as session:
            return await domain.storage(
                session, who, project_id, now=ctx.clock(), settings=ctx.settings
            )

    key = ("storage", domain.scope_key(who), project_id)
    return await ctx.stats.get(key, ctx.clock(), compute)


async def _check_scope(call: Call[NoBody, Any], project_id: uuid.UUID | None) -> None:
    """404 for a project the caller may not see, on every request (not cached)."""
    if project_id is not None:
        async with call.ctx.transaction() as session:
            await domain.scope_for(session, call.principal, project_id)
