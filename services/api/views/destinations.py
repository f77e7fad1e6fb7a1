"""``/destinations``: where artifacts are written."""

from __future__ import annotations

from typing import Any

from services.api.domain import destinations as domain
from services.api.schemas.destinations import (
    DestinationCreate,
    DestinationListQuery,
    DestinationOut,
    DestinationUpdate,
)
from services.api.web.endpoint import Call, Endpoints, NoBody, NoQuery
from services.api.web.pagination import Page
from services.common.db.models import Destination

routes = Endpoints("destinations")
DESTINATION = domain.DESTINATION


def destination_out(destination: Destination) -> DestinationOut:
    path = destination.config.get("path")
    return DestinationOut(
        id=destination.id,
        name=destination.name,
        kind=destination.kind,
        project_id=destination.project_id,
        enabled=destination.enabled,
        path=path if isinstance(path, str) else None,
        has_secret=destination.encrypted_secret is not None,
        is_default=destination.id == domain.DEFAULT_ID,
        created_at=destination.created_at,
        updated_at=destination.updated_at,
    )


def _note(call: Call[Any, NoQuery], destination: Destination) -> None:
    call.audit.target(DESTINATION, destination.id, destination.project_id)
    call.audit.details.update(name=destination.name, kind=destination.kind.value)
    if isinstance(path := destination.config.get("path"), str):
        call.audit.details["path"] = path


@routes.get(
    "/destinations",
    query=DestinationListQuery,
    response=Page[DestinationOut],
    summary="List the destinations the caller may see (global ones and their projects')",
)
async def list_destinations(call: Call[NoBody, DestinationListQuery]) -> Page[DestinationOut]:
    async with call.ctx.transaction() as session:
        rows, cursor, total = await domain.list_destinations(
            session,
            call.principal,
            call.ctx.settings,
            call.query,
            project_id=call.query.project_id,
            kind=call.query.kind,
        )
    return Page[DestinationOut](
        items=[destination_out(d) for d in rows], next_cursor=cursor, total=total
    )


@routes.post(
    "/destinations",
    body=DestinationCreate,
    response=DestinationOut,
    status=201,
    summary="Add a destination: global (admin) or a project's (owner)",
    action="destination.create",
    errors=(403, 404, 409),
)
async def create_destination(call: Call[DestinationCreate, NoQuery]) -> DestinationOut:
    project_id = call.body.root.project_id
    call.audit.details["project_id"] = str(project_id) if project_id else None  # also when refused
    async with call.ctx.transaction() as session:
        destination = await domain.create_destination(
            session, call.principal, call.ctx.settings, call.body
        )
    _note(call, destination)
    return destination_out(destination)


@routes.get("/destinations/{id}", response=DestinationOut, summary="Get a destination")
async def get_destination(call: Call[NoBody, NoQuery]) -> DestinationOut:
    destination_id = call.path_uuid("id", DESTINATION)
    async with call.ctx.transaction() as session:
        destination = await domain.get_destination(session, call.principal, destination_id)
    return destination_out(destination)


@routes.put(
    "/destinations/{id}",
    body=DestinationUpdate,
    response=DestinationOut,
    summary="Change a destination's name, state or settings (admin for global ones, "
    "else the project's owner)",
    action="destination.update",
    errors=(403, 409),
)
async def update_destination(call: Call[DestinationUpdate, NoQuery]) -> DestinationOut:
    destination_id = call.path_uuid("id", DESTINATION)
    call.audit.target(DESTINATION, destination_id)
    async with call.ctx.transaction() as session:
        destination = await domain.update_destination(
            session, call.principal, call.ctx.settings, destination_id, call.body
        )
    _note(call, destination)
    return destination_out(destination)


@routes.delete(
    "/destinations/{id}",
    summary="Delete a destination (its files stay); refused while in use",
    action="destination.delete",
    errors=(403, 409),
)
async def delete_destination(call: Call[NoBody, NoQuery]) -> None:
    destination_id = call.path_uuid("id", DESTINATION)
    call.audit.target(DESTINATION, destination_id)
    async with call.ctx.transaction() as session:
        destination = await domain.delete_destination(session, call.principal, destination_id)
    _note(call, destination)
