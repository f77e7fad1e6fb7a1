"""Wiring of the web pages: templates, static files, the pages' middleware and every
area's routes. Pages call the same domain functions as the JSON API, with the
visitor's principal, so the same authorization rules apply."""

from __future__ import annotations

from aiohttp import web

from services.api.pages import (
    admin,
    auth,
    backups,
    dashboard,
    databases,
    live,
    projects,
    restores,
    schedules,
)
from services.api.pages.middleware import add_security_headers, pages_middleware
from services.api.pages.render import PAGES, STATIC_DIR, build_pages

AREAS = (auth, dashboard, projects, databases, schedules, backups, restores, live, admin)


def setup_pages(app: web.Application) -> None:
    """Add the pages to ``app`` (after ``setup_api``: the API keeps its own errors).
    Calling it again on the same app does nothing."""
    if PAGES in app:
        return
    app[PAGES] = build_pages()
    app.middlewares.append(pages_middleware)
    app.on_response_prepare.append(add_security_headers)
    live.setup_live(app)
    for area in AREAS:
        app.router.add_routes(area.routes)
    app.router.add_static("/static", STATIC_DIR, name="static")
