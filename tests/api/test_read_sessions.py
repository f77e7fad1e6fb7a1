"""List pages read through pooled inline SQLite connections (``ApiContext.reading``):
under concurrent requests they reuse the pool's connections instead of opening
(and parsing the schema for) new ones."""

from __future__ import annotations

import asyncio

from sqlalchemy import event

from tests.api.client import Api


async def test_concurrent_list_requests_reuse_the_pooled_connections(api: Api) -> None:
    admin = await api.user("root", admin=True)
    for name in ("a", "b", "c"):
        assert (await api.post("/projects", as_=admin, json={"name": name})).status == 201
    assert (await api.get("/projects", as_=admin)).status == 200  # the pool has one now
    engine = api.ctx.read_sessions.kw["bind"]
    assert engine is not api.ctx.sessions.kw["bind"], "SQLite lists read inline"
    opened: list[object] = []

    def count(connection: object, _record: object) -> None:
        opened.append(connection)

    event.listen(engine.sync_engine, "connect", count)
    try:
        pages = await asyncio.gather(*(api.get("/projects", as_=admin) for _ in range(40)))
    finally:
        event.remove(engine.sync_engine, "connect", count)
    assert {page.status for page in pages} == {200}
    assert {len(page.body["items"]) for page in pages} == {3}
    assert opened == []
