"""Databases to back up (the service layer shared by the API and the pages).

The password is encrypted with the credential cipher before it reaches a row and is
never read back here: callers learn only whether one is stored.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from services.api.auth.principal import Principal
from services.api.domain.access import require_role, visible_projects
from services.api.schemas.databases import DatabaseCreate, DatabaseFields, DatabaseUpdate
from services.api.web.errors import Conflict, ValidationFailed, not_found
from services.api.web.pagination import PageQuery, paginate
from services.common.credentials import CredentialCipher
from services.common.db.enums import DatabaseEngine, ProjectRole, TlsMode
from services.common.db.models import Backup, Database, Schedule
from services.common.dump_options import DumpOptionsInvalid, validate_options

DATABASE = "database"

DEFAULT_PORTS = {
    DatabaseEngine.POSTGRESQL: 5432,
    DatabaseEngine.MYSQL: 3306,
    DatabaseEngine.MARIADB: 3306,
    DatabaseEngine.MONGODB: 27017,
    DatabaseEngine.REDIS: 6379,
}
# "prefer" means "TLS if the server offers it": the SQL clients can fall back, the
# MongoDB and Redis tools cannot, so they default to an explicit choice.
DEFAULT_TLS = {
    DatabaseEngine.POSTGRESQL: TlsMode.PREFER,
    DatabaseEngine.MYSQL: TlsMode.PREFER,
    DatabaseEngine.MARIADB: TlsMode.PREFER,
    DatabaseEngine.MONGODB: TlsMode.DISABLE,
    DatabaseEngine.REDIS: TlsMode.DISABLE,
}
REDIS_DB_COUNT = 16
_REDIS_INDEX = re.compile(r"[0-9]{1,2}")


class PasswordChange(StrEnum):
    """What a create or update did to the stored password (safe to audit)."""

    SET = "set"
    KEPT = "kept"
    CLEARED = "cleared"
    NONE = "none"


@dataclass(frozen=True)
class EngineFields:
    port: int
    database_name: str
    tls_mode: TlsMode
    options: dict[str, Any]


def engine_fields(engine: DatabaseEngine, fields: DatabaseFields) -> EngineFields:
    """The fields whose rules depend on the engine, with the engine's defaults
    filled in; raises ValidationFailed naming every bad field."""
    errors: dict[str, str] = {}
    database_name = fields.database_name or ""
    if engine is DatabaseEngine.REDIS:
        database_name = database_name or "0"
        if not _REDIS_INDEX.fullmatch(database_name) or int(database_name) >= REDIS_DB_COUNT:
            errors["database_name"] = f"for redis, a db index from 0 to {REDIS_DB_COUNT - 1}"
        else:
            database_name = str(int(database_name))
    elif not database_name:
        errors["database_name"] = f"required for {engine.value}"
    options: dict[str, Any] = {}
    try:
        options = validate_options(engine, fields.options)
    except DumpOptionsInvalid as exc:
        errors.update({f"options.{name}": why for name, why in exc.fields.items()})
    if errors:
        raise ValidationFailed("Some fields are invalid", fields=errors)
    return EngineFields(
        port=fields.port or DEFAULT_PORTS[engine],
        database_name=database_name,
        tls_mode=fields.tls_mode or DEFAULT_TLS[engine],
        options=options,
    )


def _apply(database: Database, fields: DatabaseFields, checked: EngineFields) -> None:
    database.name = fields.name
    database.host = fields.host
    database.port = checked.port
    database.database_name = checked.database_name
    database.username = fields.username
    database.tls_mode = checked.tls_mode
    database.options = checked.options


async def create_database(
    session: AsyncSession, principal: Principal, cipher: CredentialCipher, body: DatabaseCreate
) -> tuple[Database, PasswordChange]:
    await require_role(session, principal, body.project_id, ProjectRole.OWNER, "project")
    checked = engine_fields(body.engine, body)
    await _check_name_free(session, body.project_id, body.name, None)
    database = Database(project_id=body.project_id, engine=body.engine)
    _apply(database, body, checked)
    change = PasswordChange.NONE
    if body.password is not None:
        database.encrypted_password = _encrypt(cipher, body.password)
        change = PasswordChange.SET
    await _save(session, database)
    return database, change


async def get_database(
    session: AsyncSession,
    principal: Principal,
    database_id: uuid.UUID,
    at_least: ProjectRole = ProjectRole.VIEWER,
) -> Database:
    database = await session.get(Database, database_id)
    if database is None:
        raise not_found(DATABASE)
    await require_role(session, principal, database.project_id, at_least, DATABASE)
    return database


async def list_databases(
    session: AsyncSession,
    principal: Principal,
    page: PageQuery,
    *,
    project_id: uuid.UUID | None,
    engine: DatabaseEngine | None,
) -> tuple[list[Database], str | None, int | None]:
    stmt = select(Database).where(visible_projects(principal, Database.project_id))
    if project_id is not None:
        await require_role(session, principal, project_id, ProjectRole.VIEWER, "project")
        stmt = stmt.where(Database.project_id == project_id)
    if engine is not None:
        stmt = stmt.where(Database.engine == engine)
    return await paginate(session, stmt, page, order=(Database.created_at, Database.id))


async def update_database(
    session: AsyncSession,
    principal: Principal,
    cipher: CredentialCipher,
    database_id: uuid.UUID,
    body: DatabaseUpdate,
) -> tuple[Database, PasswordChange]:
    database = await get_database(session, principal, database_id, ProjectRole.OWNER)
    checked = engine_fields(database.engine, body)
    await _check_name_free(session, database.project_id, body.name, database.id)
    _apply(database, body, checked)
    change = PasswordChange.KEPT if database.encrypted_password else PasswordChange.NONE
    if body.password is not None:
        database.encrypted_password = _encrypt(cipher, body.password)
        change = PasswordChange.SET
    elif body.clear_password:
        database.encrypted_password = None
        change = PasswordChange.CLEARED
    await _save(session, database)
    return database, change


@dataclass(frozen=True)
class DeletedDatabase:
    project_id: uuid.UUID
    schedules: list[uuid.UUID]
    """The schedules that went with it."""


async def delete_database(
    session: AsyncSession, principal: Principal, database_id: uuid.UUID
) -> DeletedDatabase:
    """Delete a database and (by cascade) its schedules; refused while backups of it
    exist (their artifacts must be deleted first, through the backups)."""
    database = await get_database(session, principal, database_id, ProjectRole.OWNER)
    schedules = list(
        await session.scalars(select(Schedule.id).where(Schedule.database_id == database.id))
    )
    try:
        async with session.begin_nested():
            await session.delete(database)
    except IntegrityError:
        count = await session.scalar(
            select(func.count()).select_from(Backup).where(Backup.database_id == database_id)
        )
        raise Conflict(
            f"this database still has {count or 'some'} backup(s): delete its backups first"
        ) from None
    return DeletedDatabase(project_id=database.project_id, schedules=schedules)


def _encrypt(cipher: CredentialCipher, password: str) -> bytes:
    return cipher.encrypt(password).encode("ascii")


async def _check_name_free(
    session: AsyncSession, project_id: uuid.UUID, name: str, own_id: uuid.UUID | None
) -> None:
    """Before any change is made (a pending change would be flushed by the query)."""
    stmt = select(Database.id).where(Database.project_id == project_id, Database.name == name)
    if own_id is not None:
        stmt = stmt.where(Database.id != own_id)
    if await session.scalar(stmt) is not None:
        raise _name_taken()


async def _save(session: AsyncSession, database: Database) -> None:
    """Flush in a savepoint, so a name taken meanwhile is a 409, not a broken session."""
    try:
        async with session.begin_nested():
            session.add(database)
    except IntegrityError:
        raise _name_taken() from None


def _name_taken() -> Conflict:
    return Conflict(
        "a database with this name exists in the project",
        fields={"name": "already taken in this project"},
    )
