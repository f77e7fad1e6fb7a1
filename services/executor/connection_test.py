"""Answers ``bm.v1.database.test`` requests: probe the database with its engine's
async driver from where the dump tools run, and reply with the server version and
latency, or an error a person can act on."""

from __future__ import annotations

import logging

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from proto import subjects
from proto.codec import ProtoError, decode, encode
from proto.requests import DatabaseTestReply, DatabaseTestRequest
from services.common.db.models import Database
from services.common.errors import BackupManagerError
from services.common.redact import redact
from services.executor.adapters import adapter_for
from services.executor.adapters.base import Target
from services.executor.context import ExecutorContext

log = logging.getLogger(__name__)
QUEUE_GROUP = "bm-executors"


class ConnectionTester:
    def __init__(self, ctx: ExecutorContext) -> None:
        self.ctx = ctx
        self._sub: Subscription | None = None

    async def start(self) -> None:
        self._sub = await self.ctx.nc.subscribe(
            subjects.DATABASE_TEST, queue=QUEUE_GROUP, cb=self._answer
        )

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None

    async def _answer(self, msg: Msg) -> None:
        try:
            request = decode(DatabaseTestRequest, msg.data)
        except ProtoError as exc:
            log.warning("ignoring a malformed connection test request: %s", exc)
            return
        reply = await self.test(request)
        await msg.respond(encode(reply))

    async def test(self, request: DatabaseTestRequest) -> DatabaseTestReply:
        async with self.ctx.sessions() as session:
            database = await session.get(Database, request.database_id)
        if database is None:
            return self._error(request, "database_missing", "this database no longer exists")
        password = None
        try:
            if database.encrypted_password:
                password = self.ctx.cipher.decrypt(database.encrypted_password.decode())
            target = Target(
                engine=database.engine.value, host=database.host, port=database.port,
                database=database.database_name, username=database.username,
                password=password, tls_mode=database.tls_mode.value,
                options=dict(database.options or {}), name=database.name,
            )  # fmt: skip
            timeout = min(request.timeout_s, self.ctx.settings.connection_test_timeout_s)
            result = await adapter_for(target.engine).probe(target, timeout)
        except BackupManagerError as exc:
            return self._error(request, exc.code, redact(str(exc), [password]))
        return DatabaseTestReply(
            database_id=request.database_id, ok=True, executor_id=self.ctx.executor_id,
            engine=database.engine.value, server_version=result.server_version,
            database_size_bytes=result.database_size_bytes, latency_ms=result.latency_ms,
        )  # fmt: skip

    def _error(self, request: DatabaseTestRequest, code: str, message: str) -> DatabaseTestReply:
        return DatabaseTestReply(
            database_id=request.database_id, ok=False, executor_id=self.ctx.executor_id,
            error_code=code, error=message,
        )  # fmt: skip
