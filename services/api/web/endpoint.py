"""Declaring an endpoint once: method, path, request and response models, who may
call it, and how it is audited. The same declaration validates requests, renders
responses and generates the OpenAPI document.

    routes = Endpoints("projects")

    @routes.post("/projects", body=ProjectCreate, response=ProjectOut, status=201,
                 summary="Create a project")
    async def create_project(call: Call[ProjectCreate, NoQuery]) -> ProjectOut: ...
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

import orjson
from aiohttp import web
from pydantic import BaseModel, ConfigDict, ValidationError

from services.api.auth.principal import Principal, bearer_token, resolve_principal
from services.api.context import API, ApiContext
from services.api.web.errors import (
    ApiError,
    BadRequest,
    Forbidden,
    NotFound,
    Unauthorized,
    ValidationFailed,
)
from services.api.web.pagination import RowsPage

log = logging.getLogger(__name__)

API_PREFIX = "/api/v1"
Auth = Literal["public", "user", "admin"]
B = TypeVar("B", bound=BaseModel)
Q = TypeVar("Q", bound=BaseModel)


class NoBody(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NoQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")


@dataclass
class AuditNote:
    """What the handler tells the audit log about its call (never a secret)."""

    target_type: str | None = None
    target_id: str | None = None
    project_id: uuid.UUID | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def target(self, kind: str, ident: object, project_id: uuid.UUID | None = None) -> None:
        self.target_type = kind
        self.target_id = str(ident)
        if project_id is not None:
            self.project_id = project_id


@dataclass
class Call(Generic[B, Q]):
    request: web.Request
    ctx: ApiContext
    body: B
    query: Q
    principal_or_none: Principal | None
    audit: AuditNote = field(default_factory=AuditNote)

    @property
    def principal(self) -> Principal:
        if self.principal_or_none is None:
            raise Unauthorized("log in first")
        return self.principal_or_none

    def path_uuid(self, name: str, what: str) -> uuid.UUID:
        """A UUID path parameter; anything else is simply not found."""
        try:
            return uuid.UUID(self.request.match_info[name])
        except (KeyError, ValueError):
            raise NotFound(f"{what} not found") from None

    @property
    def client_address(self) -> str:
        return self.request.remote or ""


Handler = Callable[[Call[Any, Any]], Awaitable[Any]]
AuditWriter = Callable[[Call[Any, Any], "Route", int], Awaitable[None]]


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    tag: str
    summary: str
    body: type[BaseModel] | None
    query: type[BaseModel] | None
    response: Any
    status: int
    auth: Auth
    action: str | None
    errors: tuple[int, ...]
    raw_body: str | None = None
    """Media type of a body read by the handler as a stream (not JSON)."""

    @property
    def full_path(self) -> str:
        return API_PREFIX + self.path

    @property
    def audited(self) -> bool:
        return self.action is not None


class Endpoints:
    """The endpoints of one area (one OpenAPI tag)."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.routes: list[Route] = []

    def route(
        self,
        method: str,
        path: str,
        *,
        summary: str,
        body: type[BaseModel] | None = None,
        query: type[BaseModel] | None = None,
        response: Any = None,
        status: int = 200,
        auth: Auth = "user",
        action: str | None = None,
        errors: tuple[int, ...] = (),
        raw_body: str | None = None,
    ) -> Callable[[Handler], Handler]:
        mutating = method in {"POST", "PUT", "PATCH", "DELETE"}
        if mutating and action is None:
            action = f"{self.tag}.{method.lower()}"

        def register(handler: Handler) -> Handler:
            self.routes.append(
                Route(method, path, handler, self.tag, summary, body, query, response,
                      status, auth, action, errors, raw_body)
            )  # fmt: skip
            return handler

        return register

    def get(self, path: str, **kw: Any) -> Callable[[Handler], Handler]:
        return self.route("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> Callable[[Handler], Handler]:
        return self.route("POST", path, **kw)

    def put(self, path: str, **kw: Any) -> Callable[[Handler], Handler]:
        return self.route("PUT", path, **kw)

    def patch(self, path: str, **kw: Any) -> Callable[[Handler], Handler]:
        return self.route("PATCH", path, **kw)

    def delete(self, path: str, **kw: Any) -> Callable[[Handler], Handler]:
        return self.route("DELETE", path, **kw)


def validation_fields(exc: ValidationError) -> dict[str, str]:
    """pydantic errors as ``{"field.path": "message"}`` (first message per field)."""
    fields: dict[str, str] = {}
    for error in exc.errors(include_url=False, include_input=False):
        where = ".".join(str(part) for part in error["loc"]) or "body"
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown field"
        fields.setdefault(where, message)
    return fields


async def _parse_body(request: web.Request, model: type[BaseModel] | None) -> BaseModel:
    if model is None:
        return NoBody()
    raw = await request.read()
    if not raw.strip():
        raw = b"{}"
    elif request.content_type not in {"application/json", "application/octet-stream", ""}:
        raise ApiError("Send the body as application/json", code="unsupported_media_type")
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        if any(error["type"] == "json_invalid" for error in exc.errors()):
            raise BadRequest("Request body is not valid JSON") from None
        raise ValidationFailed("Some fields are invalid", fields=validation_fields(exc)) from None


def _parse_query(request: web.Request, model: type[BaseModel] | None) -> BaseModel:
    if model is None:
        model = NoQuery
    values: dict[str, Any] = {}
    for key in request.query:
        found = request.query.getall(key)
        values[key] = found if len(found) > 1 else found[0]
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise ValidationFailed(
            "Some query parameters are invalid", fields=validation_fields(exc)
        ) from None


# Tests set this: every RowsPage rendered is checked against its route's model.
CHECK_ROWS_PAGES = False


def _render(route: Route, result: Any) -> web.StreamResponse:
    if isinstance(result, web.StreamResponse):
        return result
    if result is None:
        return web.Response(status=204 if route.status in {200, 204} else route.status)
    if isinstance(result, BaseModel):
        body = result.model_dump_json().encode()
    elif isinstance(result, RowsPage):
        body = _rows_page_json(route, result)
    else:
        raise TypeError(f"{route.method} {route.path} returned {type(result).__name__}")
    return web.Response(body=body, status=route.status, content_type="application/json")


def _uuid_subclass(value: object) -> str:
    """asyncpg's UUIDs subclass ``uuid.UUID``; orjson writes only the class itself."""
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _rows_page_json(route: Route, page: RowsPage) -> bytes:
    """orjson writes what pydantic would (RFC 3339 times with ``Z``, UUIDs, enum
    values) about seven times faster for a page of backups."""
    body = orjson.dumps(
        {"items": page.items, "next_cursor": page.next_cursor, "total": page.total},
        default=_uuid_subclass,
        option=orjson.OPT_UTC_Z,
    )
    if CHECK_ROWS_PAGES:
        assert route.response is not None, f"{route.path}: a RowsPage needs a response model"
        as_model = route.response.model_validate_json(body).model_dump(mode="json")
        assert as_model == orjson.loads(body), f"{route.path}: the page differs from its model"
    return body


def aiohttp_handler(
    route: Route, audit: AuditWriter | None
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        ctx = request.app[API]
        call: Call[Any, Any] = Call(request, ctx, NoBody(), NoQuery(), None)
        status = 500
        try:
            call.principal_or_none = await _authenticate(request, ctx, route)
            call.query = _parse_query(request, route.query)
            call.body = await _parse_body(request, route.body)
            response = _render(route, await route.handler(call))
            status = response.status
            return response
        except ApiError as exc:
            status = exc.status
            raise
        finally:
            if route.method != "GET":
                await ctx.changed()  # a change here applies to the next request
            if audit is not None and route.audited:
                await audit(call, route, status)

    handle.__name__ = route.handler.__name__
    return handle


async def _authenticate(request: web.Request, ctx: ApiContext, route: Route) -> Principal | None:
    token = bearer_token(request) if route.auth != "public" else _optional_bearer(request)
    if token is None:
        if route.auth == "public":
            return None
        raise Unauthorized("log in first: send 'Authorization: Bearer <token>'")
    try:
        principal = await resolve_principal(ctx, token, ctx.clock())
    except Unauthorized:
        if route.auth == "public":
            return None  # e.g. an expired access token sent along to /auth/refresh
        raise
    if route.auth == "admin" and not principal.acts_as_admin:
        raise Forbidden("only an administrator may do this")
    return principal


def _optional_bearer(request: web.Request) -> str | None:
    try:
        return bearer_token(request)
    except Unauthorized:
        return None


def add_routes(
    app: web.Application, groups: list[Endpoints], audit: AuditWriter | None
) -> list[Route]:
    routes = [route for group in groups for route in group.routes]
    for route in routes:
        app.router.add_route(route.method, route.full_path, aiohttp_handler(route, audit))
    return routes
