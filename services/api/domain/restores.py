"""Restores seen from the API: ask for one (checks, the queued row and the job) —
from a backup, from an uploaded file, or as a verification of a backup — and read
their state. The executor does the work and writes the outcome.

An upload is streamed to ``<data dir>/uploads/<restore id>.part`` (never held in
memory), its format checked against the engine from its first bytes before anything
is written, its size capped by ``BM_MAX_UPLOAD_BYTES``, and renamed to its final key
(which carries its sha256) only once complete; anything partial is removed."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import BinaryIO

from nats.aio.client import Client as NATS
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from proto.jobs import RestoreRequested
from proto.values import RestorePurpose
from services.api.auth.principal import Principal
from services.api.domain.access import require_role, visible_projects
from services.api.domain.backups import get_backup
from services.api.domain.databases import get_database
from services.api.web.errors import (
    Conflict,
    PayloadTooLarge,
    ServiceUnavailable,
    ValidationFailed,
    not_found,
)
from services.api.web.pagination import PageQuery, paginate
from services.common.db.enums import BackupStatus, ProjectRole, RestoreMode, RestoreSource
from services.common.db.models import Backup, Database, Restore
from services.common.dump_formats import RAW_HEAD_BYTES, NotADump, inflate_head, recognise
from services.common.settings import Settings
from services.common.streams import publish
from services.common.uploads import partial_path, upload_key, upload_path, uploads_dir

RESTORE = "restore"
DEFAULT_MAX_UPLOAD_BYTES = 20 * 1024**3
VERIFY_PREFIX = "bm_verify_"
"""Verification restores go into a scratch database of this prefix (no target row)."""


def max_upload_bytes(settings: Settings) -> int:
    return settings.max_upload_bytes


def verify_scratch(settings: Settings) -> str:
    """``BM_VERIFY_SCRATCH``: ``local`` (temporary servers) or ``source``."""
    return settings.verify_scratch


def purpose_of(restore: Restore) -> RestorePurpose:
    if restore.target_database_id is None and restore.target_name.startswith(VERIFY_PREFIX):
        return RestorePurpose.VERIFY
    return RestorePurpose.RESTORE


async def request_restore(
    session: AsyncSession,
    principal: Principal,
    backup_id: uuid.UUID,
    *,
    target_database_id: uuid.UUID | None,
    target_name: str | None,
    mode: RestoreMode,
    confirm_overwrite_source: bool,
    no_owner: bool,
) -> tuple[Restore, RestoreRequested]:
    backup, project_id = await get_backup(session, principal, backup_id, ProjectRole.OPERATOR)
    if backup.status is not BackupStatus.SUCCEEDED:
        raise Conflict(
            f"only a successful backup can be restored (this one is {backup.status.value})"
        )
    target = await get_database(
        session, principal, target_database_id or backup.database_id, ProjectRole.OPERATOR
    )
    source = await session.get(Database, backup.database_id)
    assert source is not None
    if target.engine is not source.engine and {target.engine.value, source.engine.value} != {
        "mysql", "mariadb"
    }:  # fmt: skip
        raise ValidationFailed(
            f"a {source.engine.value} backup cannot be restored into a {target.engine.value} "
            "database", fields={"target_database_id": "engine differs from the backup's"},
        )  # fmt: skip
    if target.engine.value == "redis" and target_name:
        raise ValidationFailed(
            "a Redis restore writes every logical database of the backup into the same "
            "number on the target; it takes no database name",
            fields={"target_database_name": "not used for Redis"},
        )
    name = target_name or target.database_name
    # The same server and database name, through whichever row it is reached (Redis:
    # the same server, since every logical database is restored).
    here = (target.host, target.port, name if target.engine.value != "redis" else "")
    there = (source.host, source.port,
             source.database_name if source.engine.value != "redis" else "")  # fmt: skip
    over_source = here == there
    if over_source and not confirm_overwrite_source:
        raise ValidationFailed(
            "this restore would write over the database the backup came from",
            fields={"confirm_overwrite_source": "set to true to restore over the source"},
        )
    restore = Restore(backup_id=backup.id, target_database_id=target.id, target_name=name,
                      mode=mode, requested_by_id=principal.user_id)  # fmt: skip
    session.add(restore)
    await session.flush()
    job = RestoreRequested(
        restore_id=restore.id, project_id=project_id, backup_id=backup.id,
        target_database_id=target.id, target_database_name=name, mode=mode,
        no_owner=no_owner, requested_by=principal.user_id,
    )  # fmt: skip
    return restore, job


async def check_upload_target(
    session: AsyncSession, principal: Principal, database_id: uuid.UUID, *,
    target_name: str | None, confirm_overwrite_source: bool,
) -> tuple[Database, str]:  # fmt: skip
    """The database an upload is restored into and the name on its server."""
    database = await get_database(session, principal, database_id, ProjectRole.OPERATOR)
    if database.engine.value == "redis" and target_name:
        raise ValidationFailed(
            "a Redis restore writes every logical database of the file into the same number",
            fields={"target_database_name": "not used for Redis"},
        )
    name = target_name or database.database_name
    if (database.engine.value == "redis" or name == database.database_name) and (
        not confirm_overwrite_source
    ):
        raise ValidationFailed(
            "this restore would write into the very database this entry backs up",
            fields={"confirm_overwrite_source": "set to true to restore into it, or choose "
                    "target_database_name"},
        )  # fmt: skip
    return database, name


async def stage_upload(
    chunks: AsyncIterator[bytes], *, settings: Settings, engine: str, restore_id: uuid.UUID,
    declared_size: int | None,
) -> str:  # fmt: skip
    """Stream an uploaded dump into the staging directory; returns its key. The
    format is checked from the first bytes before anything is written; beyond the
    size limit the partial file is removed and 413 raised."""
    limit = max_upload_bytes(settings)
    if declared_size is not None and declared_size > limit:
        raise PayloadTooLarge(f"the file is {declared_size} bytes; uploads are limited to "
                              f"{limit} bytes (BM_MAX_UPLOAD_BYTES)")  # fmt: skip
    iterator = aiter(chunks)
    head = b""
    async for chunk in iterator:
        head += chunk
        if len(head) >= RAW_HEAD_BYTES:
            break
    try:
        recognise(engine, inflate_head(head), complete=len(head) < RAW_HEAD_BYTES)
    except NotADump as exc:
        raise ValidationFailed(f"{exc}; nothing was restored", code="not_a_dump") from None
    directory = uploads_dir(settings.data_dir)
    directory.mkdir(parents=True, exist_ok=True)
    partial = partial_path(settings.data_dir, restore_id)
    digest = hashlib.sha256()
    size = 0
    try:
        with _exclusive(partial) as handle:
            pending = [head]
            while True:
                for data in pending:
                    size += len(data)
                    if size > limit:
                        raise PayloadTooLarge(f"the file is larger than the upload limit of "
                                              f"{limit} bytes (BM_MAX_UPLOAD_BYTES)")  # fmt: skip
                    digest.update(data)
                    await asyncio.to_thread(handle.write, data)
                chunk = await anext(iterator, b"")
                if not chunk:
                    break
                pending = [chunk]
            await asyncio.to_thread(_sync, handle)
        key = upload_key(restore_id, digest.hexdigest())
        partial.rename(upload_path(settings.data_dir, key))
        return key
    finally:
        partial.unlink(missing_ok=True)


@contextlib.contextmanager
def _exclusive(path: Path) -> Iterator[BinaryIO]:
    """A new 0600 file (never an existing one)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        yield handle


def _sync(handle: BinaryIO) -> None:
    handle.flush()
    os.fsync(handle.fileno())


def remove_upload(settings: Settings, key: str) -> None:
    upload_path(settings.data_dir, key).unlink(missing_ok=True)


async def create_upload_restore(
    session: AsyncSession, principal: Principal, database: Database, *, restore_id: uuid.UUID,
    key: str, name: str, mode: RestoreMode, no_owner: bool,
) -> tuple[Restore, RestoreRequested]:  # fmt: skip
    restore = Restore(id=restore_id, source=RestoreSource.UPLOAD, upload_key=key,
                      target_database_id=database.id, target_name=name, mode=mode,
                      requested_by_id=principal.user_id)  # fmt: skip
    session.add(restore)
    await session.flush()
    job = RestoreRequested(
        restore_id=restore.id, project_id=database.project_id, upload_key=key,
        target_database_id=database.id, target_database_name=name, mode=mode,
        no_owner=no_owner, requested_by=principal.user_id,
    )  # fmt: skip
    return restore, job


async def request_verification(
    session: AsyncSession, principal: Principal, backup_id: uuid.UUID, settings: Settings
) -> tuple[Restore, RestoreRequested]:
    backup, project_id = await get_backup(session, principal, backup_id, ProjectRole.OPERATOR)
    if backup.status is not BackupStatus.SUCCEEDED:
        raise Conflict(
            f"only a successful backup can be verified (this one is {backup.status.value})"
        )
    source = await session.get(Database, backup.database_id)
    assert source is not None
    if source.engine.value == "mongodb" and verify_scratch(settings) != "source":
        raise Conflict("MongoDB backups are verified in a scratch database on their own "
                       "server only: set BM_VERIFY_SCRATCH=source on the executors")  # fmt: skip
    restore_id = uuid.uuid4()
    name = f"{VERIFY_PREFIX}{restore_id.hex[:16]}"
    restore = Restore(id=restore_id, backup_id=backup.id, target_database_id=None,
                      target_name=name, mode=RestoreMode.INTO_EMPTY,
                      requested_by_id=principal.user_id)  # fmt: skip
    session.add(restore)
    await session.flush()
    job = RestoreRequested(restore_id=restore_id, project_id=project_id,
                           purpose=RestorePurpose.VERIFY, backup_id=backup.id,
                           target_database_name=name,
                           requested_by=principal.user_id)  # fmt: skip
    return restore, job


async def send_job(nc: NATS | None, job: RestoreRequested) -> None:
    if nc is None or not nc.is_connected:
        raise ServiceUnavailable("the job queue (NATS) is unavailable; nothing was queued")
    try:
        await publish(nc, job)
    except Exception:
        raise ServiceUnavailable("the job queue refused the job; nothing was queued") from None


async def list_restores(
    session: AsyncSession, principal: Principal, page: PageQuery, *,
    backup_id: uuid.UUID | None, target_database_id: uuid.UUID | None, status: object,
) -> tuple[list[Restore], str | None, int | None]:  # fmt: skip
    stmt = (
        select(Restore)
        .outerjoin(Backup, Backup.id == Restore.backup_id)
        .join(Database, Database.id == func.coalesce(Restore.target_database_id,
                                                      Backup.database_id))
        .where(visible_projects(principal, Database.project_id))
    )  # fmt: skip
    if backup_id is not None:
        stmt = stmt.where(Restore.backup_id == backup_id)
    if target_database_id is not None:
        stmt = stmt.where(Restore.target_database_id == target_database_id)
    if status is not None:
        stmt = stmt.where(Restore.status == status)
    return await paginate(session, stmt, page, order=(Restore.queued_at, Restore.id))


async def get_restore(
    session: AsyncSession, principal: Principal, restore_id: uuid.UUID
) -> Restore:
    row = (
        await session.execute(
            select(Restore, Database.project_id)
            .outerjoin(Backup, Backup.id == Restore.backup_id)
            .join(Database, Database.id == func.coalesce(Restore.target_database_id,
                                                          Backup.database_id))
            .where(Restore.id == restore_id)
        )
    ).one_or_none()  # fmt: skip
    if row is None:
        raise not_found(RESTORE)
    await require_role(session, principal, row[1], ProjectRole.VIEWER, RESTORE)
    restore: Restore = row[0]
    return restore
