"""Wiring of the API: middlewares, every area's endpoints, the OpenAPI document."""

from __future__ import annotations

from aiohttp import web

from services.api.domain.audit import write_audit
from services.api.views import (
    audit,
    auth,
    backups,
    databases,
    destinations,
    projects,
    restores,
    retention,
    schedules,
    stats,
    users,
)
from services.api.web.endpoint import Endpoints, Route, add_routes
from services.api.web.errors import error_middleware
from services.api.web.openapi import add_openapi_routes, build_openapi

VERSION = "0.1.0"

# One entry per area; each module owns its Endpoints.
AREAS: list[Endpoints] = [
    auth.routes,
    users.routes,
    projects.routes,
    databases.routes,
    destinations.routes,
    schedules.routes,
    retention.routes,
    backups.routes,
    restores.routes,
    stats.routes,
    audit.routes,
]


def setup_api(app: web.Application) -> list[Route]:
    """Add the JSON API to ``app`` (the context is attached later, under ``API``)."""
    app.middlewares.append(error_middleware)
    routes = add_routes(app, AREAS, write_audit)
    add_openapi_routes(app, build_openapi(routes, VERSION))
    return routes
