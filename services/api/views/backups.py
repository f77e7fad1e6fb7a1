"""``/backups``, ``/databases/{id}/backups`` (back up now), ``/databases/{id}/test``
(connection test through an executor) and streamed downloads."""

from __future__ import annotations

import base64
import re
import uuid
from datetime import datetime
from pathlib import PurePosixPath
from typing import Any

from aiohttp import web

from proto.requests import DatabaseTestReply, DatabaseTestRequest
from proto.values import Compression
from services.api.domain import backup_list
from services.api.domain import backups as domain
from services.api.domain.databases import get_database
from services.api.schemas.backups import (
    BackupDetail,
    BackupListQuery,
    BackupNow,
    BackupOut,
    ConnectionTestOut,
    CopyOut,
)
from services.api.web.endpoint import Call, Endpoints, NoBody, NoQuery
from services.api.web.errors import ApiError, ServiceUnavailable, ValidationFailed
from services.api.web.pagination import Page, RowsPage
from services.common.db.enums import ProjectRole
from services.common.db.models import Backup
from services.common.streams import NoResponder, request

routes = Endpoints("backups")
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def backup_fields(backup: Backup, project_id: uuid.UUID, copies: list[Any]) -> dict[str, Any]:
    duration = None
    if backup.started_at and backup.finished_at:
        duration = (backup.finished_at - backup.started_at).total_seconds()
    columns = ("id", "database_id", "schedule_id", "trigger", "status", "slot_at", "queued_at",
               "started_at", "finished_at", "attempts", "bytes_in", "bytes_out", "sha256",
               "artifact_key", "error_code", "error_message", "warning", "verified_at",
               "verify_status", "verify_message")  # fmt: skip
    return {
        **{name: getattr(backup, name) for name in columns},
        "project_id": project_id,
        "duration_s": duration,
        "compression": backup.compression.value if backup.compression else None,
        "copies": [CopyOut.model_validate(copy) for copy in copies],
    }


def listed_fields(backup: backup_list.BackupRow) -> dict[str, Any]:
    """A listed row as ``BackupOut`` fields (enums render as their values)."""
    backup["duration_s"] = _duration(backup["started_at"], backup["finished_at"])
    return backup


def _duration(started: datetime | None, finished: datetime | None) -> float | None:
    return (finished - started).total_seconds() if started and finished else None


@routes.post("/databases/{id}/backups", body=BackupNow, response=BackupOut, status=202,
             summary="Back up now (operator): queue a backup of this database",
             action="backup.create", errors=(403, 503))  # fmt: skip
async def back_up_now(call: Call[BackupNow, NoQuery]) -> BackupOut:
    database_id = call.path_uuid("id", "database")
    body = call.body
    try:
        compression = Compression(
            algorithm=body.compression.algorithm, level=body.compression.level
        )
    except ValueError as exc:
        raise ValidationFailed(
            "Invalid compression", fields={"compression.level": str(exc).splitlines()[-1]}
        ) from None
    async with call.ctx.transaction() as session:
        backup, job = await domain.queue_backup(
            session, call.principal, database_id, destination_ids=body.destination_ids,
            compression=compression, timeout_s=body.timeout_s,
        )  # fmt: skip
    call.audit.target("backup", backup.id, job.project_id)
    try:
        await domain.send_job(call.ctx.nc, job)
    except ApiError:
        async with call.ctx.transaction() as session:
            await session.delete(await session.get(Backup, backup.id))
        raise
    return BackupOut(**backup_fields(backup, job.project_id, []))


@routes.get(
    "/backups",
    query=BackupListQuery,
    response=Page[BackupOut],
    summary="List backups (filters: project, database, schedule, status, trigger, time)",
)
async def list_backups(call: Call[NoBody, BackupListQuery]) -> RowsPage:
    q = call.query
    filters = backup_list.Filters(project_id=q.project_id, database_id=q.database_id,
                             schedule_id=q.schedule_id, status=q.status, trigger=q.trigger,
                             since=q.since, until=q.until)  # fmt: skip
    async with call.ctx.reading() as session:
        rows, cursor, total = await backup_list.list_backups(session, call.principal, q, filters)
    return RowsPage([listed_fields(b) for b in rows], cursor, total)


@routes.get("/backups/{id}", response=BackupDetail, summary="A backup, with its log")
async def get_backup(call: Call[NoBody, NoQuery]) -> BackupDetail:
    backup_id = call.path_uuid("id", "backup")
    async with call.ctx.transaction() as session:
        backup, project_id = await domain.get_backup(session, call.principal, backup_id)
        copies = await domain.copies_of(session, [backup.id])
    fields = backup_fields(backup, project_id, copies[backup.id])
    return BackupDetail(**fields, log=backup.log_tail, manifest=backup.manifest)


@routes.delete("/backups/{id}", summary="Delete a backup and its artifacts (owner)",
               action="backup.delete", errors=(403, 409))  # fmt: skip
async def delete_backup(call: Call[NoBody, NoQuery]) -> None:
    backup_id = call.path_uuid("id", "backup")
    call.audit.target("backup", backup_id)
    async with call.ctx.transaction() as session:
        backup, project_id, removed = await domain.delete_backup(session, call.principal, backup_id)
    call.audit.target("backup", backup_id, project_id)
    call.audit.details["artifact_key"] = backup.artifact_key
    await domain.announce_deleted(call.ctx.nc, backup, project_id, removed, call.principal.user_id)


@routes.get(
    "/backups/{id}/download",
    response="application/octet-stream",
    summary="Download the artifact (streamed; Range supported)",
    errors=(409, 416),
)
async def download(call: Call[NoBody, NoQuery]) -> web.StreamResponse:
    backup_id = call.path_uuid("id", "backup")
    async with call.ctx.transaction() as session:
        backup, _ = await domain.get_backup(session, call.principal, backup_id)
        driver, key, size = await domain.readable_copy(session, backup)
    start, end = _range(call.request.headers.get("Range"), size)
    partial = (start, end) != (0, size)
    response = web.StreamResponse(status=206 if partial else 200)
    response.content_type = "application/octet-stream"
    response.content_length = end - start
    name = PurePosixPath(key).name
    response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    response.headers["Accept-Ranges"] = "bytes"
    if backup.sha256:
        digest = base64.b64encode(bytes.fromhex(backup.sha256)).decode()
        response.headers["Digest"] = f"sha-256={digest}"
        response.headers["X-Checksum-SHA256"] = backup.sha256
    if partial:
        response.headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    await response.prepare(call.request)
    async for chunk in driver.read(key, start=start, end=end):
        await response.write(chunk)
    await response.write_eof()
    return response


def _range(header: str | None, size: int) -> tuple[int, int]:
    """``[start, end)`` of a single-range ``Range`` header (the whole file without one)."""
    if not header:
        return 0, size
    match = _RANGE.match(header.strip())
    if match is None or not (match.group(1) or match.group(2)):
        raise _unsatisfiable(size)
    first, last = match.groups()
    if first:
        start = int(first)
        end = min(int(last) + 1, size) if last else size
    else:
        start, end = max(0, size - int(last)), size
    if start >= size or start >= end:
        raise _unsatisfiable(size)
    return start, end


def _unsatisfiable(size: int) -> ApiError:
    error = ApiError(f"Range not satisfiable (the artifact has {size} bytes)",
                     code="range_not_satisfiable")  # fmt: skip
    error.status = 416
    return error


@routes.post("/databases/{id}/test", response=ConnectionTestOut,
             summary="Test the connection from an executor (operator)", action="database.test",
             errors=(403, 503))  # fmt: skip
async def test_connection(call: Call[NoBody, NoQuery]) -> ConnectionTestOut:
    database_id = call.path_uuid("id", "database")
    async with call.ctx.transaction() as session:
        database = await get_database(session, call.principal, database_id, ProjectRole.OPERATOR)
    call.audit.target("database", database.id, database.project_id)
    nc = call.ctx.nc
    if nc is None or not nc.is_connected:
        raise ServiceUnavailable("cannot reach the executors: NATS is unavailable")
    timeout = call.ctx.settings.connection_test_timeout_s
    try:
        reply = await request(
            nc, DatabaseTestRequest(database_id=database.id, requested_by=call.principal.user_id,
                                    timeout_s=timeout),
            DatabaseTestReply, timeout_s=timeout + 5,
        )  # fmt: skip
    except NoResponder as exc:
        raise ServiceUnavailable(f"no executor answered: {exc}") from None
    call.audit.details["ok"] = reply.ok
    return ConnectionTestOut(
        ok=reply.ok, executor_id=reply.executor_id,
        engine=reply.engine.value if reply.engine else None,
        server_version=reply.server_version, database_size_bytes=reply.database_size_bytes,
        latency_ms=reply.latency_ms, error_code=reply.error_code, error=reply.error,
    )  # fmt: skip
