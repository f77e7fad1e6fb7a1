"""The API service: JSON API under ``/api/v1`` and the web pages, on ``BM_API_PORT``."""

from __future__ import annotations

import logging
from typing import ClassVar

from aiohttp import web
from nats.aio.msg import Msg
from sqlalchemy.exc import SQLAlchemyError

from proto.subjects import API_CACHES_STALE
from services.api.app import setup_api
from services.api.context import API, ApiContext
from services.api.domain.destinations import ensure_default_destination
from services.api.pages import setup_pages
from services.common.credentials import CredentialCipher
from services.common.db.engine import session_factory
from services.common.lifecycle import Runtime, Service
from services.common.settings import Settings

log = logging.getLogger(__name__)


class ApiService(Service):
    name: ClassVar[str] = "api"

    def __init__(self) -> None:
        self._app: web.Application | None = None

    def setup_http(self, app: web.Application) -> None:
        self._app = app
        setup_api(app)
        setup_pages(app)

    def workers(self, settings: Settings) -> int:
        return settings.api_worker_count()

    async def start(self, runtime: Runtime) -> None:
        assert self._app is not None
        ctx = ApiContext(
            settings=runtime.settings,
            secrets=runtime.secrets,
            sessions=session_factory(runtime.engine),
            nc=runtime.nc,
            cipher=CredentialCipher(runtime.secrets.credential_keys),
        )
        # A fresh install can back up right away into <BM_STORAGE_DIR>/default.
        if runtime.worker == 0:  # once, not once per worker
            try:
                async with ctx.transaction() as session:
                    await ensure_default_destination(session, runtime.settings)
            except SQLAlchemyError as exc:
                log.warning(
                    "could not set up the default destination (%s); is the metadata DB "
                    "migrated? run: python -m services.manage migrate",
                    type(exc).__name__,
                )

        async def forget(msg: Msg) -> None:
            ctx.heard_of_change(msg.data)

        await runtime.nc.subscribe(API_CACHES_STALE, cb=forget)
        self._app[API] = ctx
