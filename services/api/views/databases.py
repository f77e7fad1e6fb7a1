"""``/databases``: what to back up, with encrypted credentials."""

from __future__ import annotations

from typing import Any

from services.api.domain import databases as domain
from services.api.domain.schedules import GoneSchedule, announce_gone
from services.api.schemas.databases import (
    DatabaseCreate,
    DatabaseListQuery,
    DatabaseOut,
    DatabaseUpdate,
)
from services.api.web.endpoint import Call, Endpoints, NoBody, NoQuery
from services.api.web.pagination import Page
from services.common.db.models import Database

routes = Endpoints("databases")


def database_out(database: Database) -> DatabaseOut:
    return DatabaseOut(
        id=database.id,
        project_id=database.project_id,
        name=database.name,
        engine=database.engine,
        host=database.host,
        port=database.port,
        database_name=database.database_name,
        username=database.username,
        has_password=database.encrypted_password is not None,
        tls_mode=database.tls_mode,
        options=dict(database.options),
        created_at=database.created_at,
        updated_at=database.updated_at,
    )


def _note(call: Call[Any, NoQuery], db: Database) -> None:
    call.audit.target("database", db.id, db.project_id)
    call.audit.details.update(name=db.name, engine=db.engine.value, host=db.host)


@routes.get(
    "/databases",
    query=DatabaseListQuery,
    response=Page[DatabaseOut],
    summary="List the databases the caller may see",
)
async def list_databases(call: Call[NoBody, DatabaseListQuery]) -> Page[DatabaseOut]:
    async with call.ctx.transaction() as session:
        rows, cursor, total = await domain.list_databases(
            session,
            call.principal,
            call.query,
            project_id=call.query.project_id,
            engine=call.query.engine,
        )
    return Page[DatabaseOut](items=[database_out(d) for d in rows], next_cursor=cursor, total=total)


@routes.post(
    "/databases",
    body=DatabaseCreate,
    response=DatabaseOut,
    status=201,
    summary="Add a database to a project (owner)",
    action="database.create",
    errors=(403, 404, 409),
)
async def create_database(call: Call[DatabaseCreate, NoQuery]) -> DatabaseOut:
    call.audit.details["project_id"] = str(call.body.project_id)  # also when refused
    async with call.ctx.transaction() as session:
        database, change = await domain.create_database(
            session, call.principal, call.ctx.cipher, call.body
        )
    _note(call, database)
    call.audit.details["password"] = change.value
    return database_out(database)


@routes.get("/databases/{id}", response=DatabaseOut, summary="Get a database")
async def get_database(call: Call[NoBody, NoQuery]) -> DatabaseOut:
    database_id = call.path_uuid("id", "database")
    async with call.ctx.transaction() as session:
        database = await domain.get_database(session, call.principal, database_id)
    return database_out(database)


@routes.put(
    "/databases/{id}",
    body=DatabaseUpdate,
    response=DatabaseOut,
    summary="Change a database (owner); the password is kept unless given or cleared",
    action="database.update",
    errors=(403, 409),
)
async def update_database(call: Call[DatabaseUpdate, NoQuery]) -> DatabaseOut:
    database_id = call.path_uuid("id", "database")
    call.audit.target("database", database_id)
    async with call.ctx.transaction() as session:
        database, change = await domain.update_database(
            session, call.principal, call.ctx.cipher, database_id, call.body
        )
    _note(call, database)
    call.audit.details["password"] = change.value
    return database_out(database)


@routes.delete(
    "/databases/{id}",
    summary="Delete a database and its schedules (owner); refused while it has backups",
    action="database.delete",
    errors=(403, 409),
)
async def delete_database(call: Call[NoBody, NoQuery]) -> None:
    database_id = call.path_uuid("id", "database")
    call.audit.target("database", database_id)
    async with call.ctx.transaction() as session:
        deleted = await domain.delete_database(session, call.principal, database_id)
    call.audit.target("database", database_id, deleted.project_id)
    call.audit.details["schedules_deleted"] = len(deleted.schedules)
    gone = [GoneSchedule(schedule_id, database_id) for schedule_id in deleted.schedules]
    await announce_gone(call.ctx.nc, deleted.project_id, gone, call.principal.user_id)
