from __future__ import annotations

import asyncio
import json
import logging

import pytest

from services.common.logs import JsonFormatter, configure_logging, job_id
from services.common.settings import LogFormat
from services.common.work import WorkTracker


async def test_drain_lets_quick_work_finish_and_cancels_slow_work() -> None:
    work = WorkTracker()
    finished: list[str] = []
    cancelled: list[str] = []

    async def job(name: str, seconds: float) -> None:
        try:
            await asyncio.sleep(seconds)
            finished.append(name)
        except asyncio.CancelledError:
            cancelled.append(name)
            raise

    work.spawn(job("quick", 0.05), name="quick")
    work.spawn(job("slow", 30), name="slow")
    assert await work.drain(grace=0.5) == 1
    assert finished == ["quick"]
    assert cancelled == ["slow"]
    assert len(work) == 0


def test_json_log_lines_carry_service_and_job_id(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("executor", "INFO", LogFormat.JSON)
    token = job_id.set("sched-1:2026-11-28T00:00:00Z")
    try:
        logging.getLogger("test").info("dumping %s", "orders")
    finally:
        job_id.reset(token)
        logging.getLogger().handlers.clear()
    entry = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert entry["service"] == "executor"
    assert entry["job_id"] == "sched-1:2026-11-28T00:00:00Z"
    assert entry["message"] == "dumping orders"
    assert isinstance(JsonFormatter().format(logging.makeLogRecord({"msg": "x"})), str)


async def test_request_id_is_echoed_and_tags_log_lines(caplog: pytest.LogCaptureFixture) -> None:
    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    from services.common.health import REQUEST_ID_HEADER, request_id_middleware
    from services.common.logs import ContextFilter

    async def handler(_: web.Request) -> web.Response:
        logging.getLogger("test.http").warning("handling")
        return web.Response(text="ok")

    app = web.Application(middlewares=[request_id_middleware])
    app.router.add_get("/", handler)
    caplog.handler.addFilter(ContextFilter())
    async with TestClient(TestServer(app)) as client:
        given = await client.get("/", headers={REQUEST_ID_HEADER: "abc-123"})
        made = await client.get("/", headers={REQUEST_ID_HEADER: "bad id;drop"})
    assert given.headers[REQUEST_ID_HEADER] == "abc-123"
    assert made.headers[REQUEST_ID_HEADER] not in {"", "bad id;drop"}
    ids = [getattr(record, "request_id", None) for record in caplog.records]
    assert ids == ["abc-123", made.headers[REQUEST_ID_HEADER]]
