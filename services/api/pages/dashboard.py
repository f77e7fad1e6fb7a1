"""The dashboard: numbers, charts, what runs now and what runs next."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from services.api.domain import backup_list, stats
from services.api.pages.charts import Series, area, stacked_bars
from services.api.pages.common import context, principal, query_uuid
from services.api.pages.queries import (
    CHART_GROUPS,
    active_runs,
    database_names,
    project_names,
    runs_per_day,
    stored_per_day,
    visible_project_choices,
)
from services.api.pages.render import render
from services.api.web.pagination import PageQuery

routes = web.RouteTableDef()

RUN_DAYS = 14
STORAGE_DAYS = 30
RECENT = 8
NEXT_RUNS = 8


@routes.get("/")
async def dashboard(request: web.Request) -> web.Response:
    ctx = context(request)
    who = principal(request)
    project_id = query_uuid(request, "project")
    now = ctx.clock()
    async with ctx.transaction() as session:
        board = await stats.dashboard(session, who, project_id, now=now, next_runs=NEXT_RUNS)
        scope = await stats.scope_for(session, who, project_id)
        used = await stats.storage(session, who, project_id, now=now, settings=ctx.settings)
        run_days, run_counts = await runs_per_day(session, scope, now, RUN_DAYS)
        stored_days, stored = await stored_per_day(session, scope, now, STORAGE_DAYS)
        recent, _, _ = await backup_list.list_backups(
            session,
            who,
            PageQuery(limit=RECENT),
            backup_list.Filters(project_id=project_id),
        )
        running_backups, running_restores = await active_runs(session, scope)
        projects = await visible_project_choices(session, who)
        databases = await database_names(
            session,
            [b["database_id"] for b in recent]
            + [b.database_id for b in running_backups]
            + [r.target_database_id for r in running_restores],
        )
        project_labels = await project_names(session, [project_id])
    windows = {w.window: w for w in board.windows}
    series = [Series(label, color, run_counts[label]) for label, color, _ in CHART_GROUPS]
    context_: dict[str, Any] = {
        "board": board,
        "windows": windows,
        "storage": used,
        "runs_chart": stacked_bars("Backups per day by status", run_days, series),
        "runs_table": list(zip(run_days, *(s.values for s in series), strict=True)),
        "series": series,
        "stored_chart": area("Stored bytes per day", stored_days, stored, "#4f46e5"),
        "stored_table": list(zip(stored_days, stored, strict=True)),
        "recent": recent,
        "running_backups": running_backups,
        "running_restores": running_restores,
        "databases": databases,
        "projects": projects,
        "project_id": project_id,
        "project_name": project_labels.get(project_id) if project_id else None,
        "run_days": RUN_DAYS,
        "storage_days": STORAGE_DAYS,
    }
    return render(request, "dashboard.html", context_)
