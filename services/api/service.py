"""The API service: JSON API under ``/api/v1`` and the web pages, on ``BM_API_PORT``."""

from __future__ import annotations

from typing import ClassVar

from aiohttp import web

from services.common.lifecycle import Runtime, Service

VERSION = "0.1.0"
RUNTIME: web.AppKey[Runtime] = web.AppKey("runtime", Runtime)


async def api_root(_: web.Request) -> web.Response:
    return web.json_response({"name": "BackupManager", "version": VERSION, "api": "v1"})


class ApiService(Service):
    name: ClassVar[str] = "api"

    def __init__(self) -> None:
        self._app: web.Application | None = None

    def setup_http(self, app: web.Application) -> None:
        self._app = app
        app.router.add_get("/api/v1", api_root)

    async def start(self, runtime: Runtime) -> None:
        assert self._app is not None
        self._app[RUNTIME] = runtime
