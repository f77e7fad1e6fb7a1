"""The OpenAPI 3.1 document, generated from the same route declarations and pydantic
models that validate requests and render responses; and the interactive docs page,
whose assets are served from the installed package (no network needed)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import swagger_ui
from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from services.api.web.endpoint import Route

TITLE = "BackupManager API"
SCHEMA_REF = "#/components/schemas/{model}"
_PATH_PARAM = re.compile(r"{(\w+)}")
OPENAPI: web.AppKey[dict[str, Any]] = web.AppKey("openapi", dict)
STATUS_TEXT = {
    400: "Malformed request",
    401: "Not logged in, or the token is invalid or expired",
    403: "Logged in, but the role is too weak",
    404: "Not found (or not visible to the caller)",
    409: "Conflicts with the current state",
    413: "Request body too large",
    422: "Invalid fields",
    429: "Too many attempts; see Retry-After",
    503: "A needed service did not answer",
}


class ErrorDetail(BaseModel):
    code: str
    message: str
    fields: dict[str, str] | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail


def build_openapi(routes: list[Route], version: str) -> dict[str, Any]:
    models: list[tuple[type[BaseModel], JsonSchemaMode]] = [(ErrorBody, "serialization")]
    for route in routes:
        if route.body is not None:
            models.append((route.body, "validation"))
        if isinstance(route.response, type) and issubclass(route.response, BaseModel):
            models.append((route.response, "serialization"))
    keys, schemas = models_json_schema(models, ref_template=SCHEMA_REF)
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.full_path, {})[route.method.lower()] = _operation(route, keys)
    return {
        "openapi": "3.1.0",
        "info": {"title": TITLE, "version": version},
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": schemas.get("$defs", {}),
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An access token from /auth/login or an API token (bmt_…)",
                }
            },
        },
        "tags": sorted(({"name": r.tag} for r in routes), key=lambda t: t["name"]),
    }


def _operation(route: Route, keys: dict[Any, dict[str, Any]]) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": f"{route.tag}_{route.handler.__name__}",
        "summary": route.summary,
        "tags": [route.tag],
        "parameters": _parameters(route),
        "responses": _responses(route, keys),
    }
    if route.auth != "public":
        operation["security"] = [{"bearer": []}]
    if route.raw_body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {route.raw_body: {"schema": {"type": "string", "format": "binary"}}},
        }
    if route.body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": keys[(route.body, "validation")]}},
        }
    return operation


def _parameters(route: Route) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": {"type": "string", "format": "uuid"},
        }
        for name in _PATH_PARAM.findall(route.path)
    ]
    if route.query is not None:
        schema = route.query.model_json_schema(ref_template=SCHEMA_REF)
        required = set(schema.get("required", []))
        for name, prop in schema.get("properties", {}).items():
            param = {"name": name, "in": "query", "required": name in required, "schema": prop}
            if "description" in prop:
                param["description"] = prop["description"]
            params.append(param)
    return params


def _responses(route: Route, keys: dict[Any, dict[str, Any]]) -> dict[str, Any]:
    error = {"application/json": {"schema": keys[(ErrorBody, "serialization")]}}
    responses: dict[str, Any] = {}
    if route.response is None:
        responses["204" if route.status in {200, 204} else str(route.status)] = {
            "description": "Done"
        }
    elif isinstance(route.response, type) and issubclass(route.response, BaseModel):
        responses[str(route.status)] = {
            "description": route.summary,
            "content": {"application/json": {"schema": keys[(route.response, "serialization")]}},
        }
    else:
        responses[str(route.status)] = {"description": route.summary}
    statuses: set[int] = set(route.errors) | {400, 422}
    if route.auth != "public":
        statuses |= {401}
    if route.auth == "admin":
        statuses |= {403}
    id_filters = route.query is not None and any(
        name.endswith("_id") for name in route.query.model_fields
    )
    if _PATH_PARAM.search(route.path) or id_filters:
        statuses |= {404}  # something the caller may not see, named in the path or a filter
    if route.body is not None or route.raw_body is not None:
        statuses |= {413}
    for status in sorted(statuses):
        responses[str(status)] = {"description": STATUS_TEXT.get(status, "Error"), "content": error}
    return responses


# -- interactive docs ------------------------------------------------------------

_DOCS_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<link rel="stylesheet" href="/api/docs/static/swagger-ui.css"></head>
<body><div id="docs"></div>
<script src="/api/docs/static/swagger-ui-bundle.js"></script>
<script src="/api/docs/init.js"></script></body></html>
"""
_DOCS_INIT = """window.ui = SwaggerUIBundle({url: "/api/v1/openapi.json", dom_id: "#docs",
  deepLinking: true, persistAuthorization: true});
"""
SWAGGER_STATIC = Path(swagger_ui.__file__).parent / "static"


async def openapi_json(request: web.Request) -> web.Response:
    return web.json_response(request.app[OPENAPI])


async def docs_page(_: web.Request) -> web.Response:
    return web.Response(text=_DOCS_HTML.format(title=TITLE), content_type="text/html")


async def docs_init(_: web.Request) -> web.Response:
    # A file of our own, so the page needs no inline script (strict CSP friendly).
    return web.Response(text=_DOCS_INIT, content_type="application/javascript")


def add_openapi_routes(app: web.Application, document: dict[str, Any]) -> None:
    app[OPENAPI] = document
    app.router.add_get("/api/v1/openapi.json", openapi_json)
    app.router.add_get("/api/docs", docs_page)
    app.router.add_get("/api/docs/init.js", docs_init)
    app.router.add_static("/api/docs/static", SWAGGER_STATIC, append_version=False)
