"""A small JSON client for API tests: users are made directly in the metadata DB,
requests go through the real aiohttp app over a real socket."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

from services.api.auth.tokens import issue_access_token
from services.api.context import ApiContext
from services.common.db.models import User
from services.common.passwords import hash_password

PASSWORD = "correct horse battery"
_HASH = hash_password(PASSWORD, rounds=4)  # fast rounds: tests make many users


@dataclass
class Response:
    status: int
    body: Any
    headers: dict[str, str]

    @property
    def error_code(self) -> str | None:
        if isinstance(self.body, dict) and "error" in self.body:
            code: str = self.body["error"]["code"]
            return code
        return None


@dataclass(frozen=True)
class Actor:
    id: uuid.UUID
    email: str
    token: str
    is_admin: bool = False


class Api:
    def __init__(self, client: TestClient[web.Request, web.Application], ctx: ApiContext) -> None:
        self.client = client
        self.ctx = ctx

    async def user(self, name: str | None = None, *, admin: bool = False) -> Actor:
        email = f"{name or 'user'}-{uuid.uuid4().hex[:8]}@example.com"
        async with self.ctx.transaction() as session:
            user = User(email=email, password_hash=_HASH, is_admin=admin)
            session.add(user)
            await session.flush()
            user_id = user.id
        token = issue_access_token(
            user_id,
            secret=self.ctx.secrets.jwt_secret,
            now=self.ctx.clock(),
            ttl_s=self.ctx.settings.access_token_ttl_s,
        )
        return Actor(user_id, email, token, admin)

    async def call(
        self,
        method: str,
        path: str,
        *,
        as_: Actor | str | None = None,
        json: Any = None,
        data: bytes | str | None = None,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
    ) -> Response:
        sent = dict(headers or {})
        token = as_.token if isinstance(as_, Actor) else as_
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        url = path if path.startswith("/api/") else "/api/v1" + path
        async with self.client.request(
            method, url, json=json, data=data, headers=sent, params=params
        ) as response:
            text = await response.text()
            body: Any = None
            if response.content_type == "application/json" and text:
                body = await response.json()
            else:
                body = text
            return Response(response.status, body, dict(response.headers))

    async def get(self, path: str, **kw: Any) -> Response:
        return await self.call("GET", path, **kw)

    async def post(self, path: str, **kw: Any) -> Response:
        return await self.call("POST", path, **kw)

    async def put(self, path: str, **kw: Any) -> Response:
        return await self.call("PUT", path, **kw)

    async def patch(self, path: str, **kw: Any) -> Response:
        return await self.call("PATCH", path, **kw)

    async def delete(self, path: str, **kw: Any) -> Response:
        return await self.call("DELETE", path, **kw)


async def wait_settled(api: Api, actor: Actor, path: str) -> dict[str, Any]:
    """GET ``path`` until its run (backup or restore) is no longer queued or running."""
    async with asyncio.timeout(60):
        while True:
            body = (await api.get(path, as_=actor)).body
            if body["status"] not in {"queued", "running"}:
                return dict(body)
            await asyncio.sleep(0.2)
