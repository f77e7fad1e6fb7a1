"""The executor's job worker against a real JetStream: ack only after the handler
finished, in-progress acks keep long jobs from being redelivered, the concurrency
limit holds, and a job cancelled at shutdown or crashed goes back to the queue."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import nats
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from proto.subjects import BACKUP_REQUESTED, EXECUTOR_DURABLE, JOBS_STREAM
from services.common.streams import ensure_streams
from services.common.work import WorkTracker
from services.executor.worker import JobWorker
from tests.servers import NatsServer

pytestmark = pytest.mark.integration


@pytest.fixture
async def js(nats_server: NatsServer) -> AsyncIterator[JetStreamContext]:
    nc: NATS = await nats.connect(nats_server.url)
    context = nc.jetstream()
    await ensure_streams(context, ack_wait=1.0)
    yield context
    await nc.close()


def make_worker(
    js: JetStreamContext,
    handler: Callable[[Msg], Awaitable[None]],
    work: WorkTracker,
    *,
    concurrency: int = 2,
) -> JobWorker:
    return JobWorker(
        js,
        stream=JOBS_STREAM,
        durable=EXECUTOR_DURABLE,
        handlers={BACKUP_REQUESTED: handler},
        work=work,
        concurrency=concurrency,
        heartbeat_s=0.2,
    )


async def pending_jobs(js: JetStreamContext) -> int:
    info = await js.stream_info(JOBS_STREAM)
    return info.state.messages


async def wait_until(condition: Callable[[], bool], within_s: float = 10) -> None:
    async with asyncio.timeout(within_s):
        while not condition():
            await asyncio.sleep(0.02)


async def test_shutdown_finishes_quick_jobs_and_requeues_cancelled_ones(
    js: JetStreamContext,
) -> None:
    started: list[bytes] = []
    finished: list[bytes] = []

    async def handler(msg: Msg) -> None:
        started.append(msg.data)
        await asyncio.sleep(0.3 if msg.data == b"quick" else 60)
        finished.append(msg.data)

    work = WorkTracker()
    worker = make_worker(js, handler, work)
    await worker.start()
    await js.publish(BACKUP_REQUESTED, b"quick")
    await js.publish(BACKUP_REQUESTED, b"slow")
    await wait_until(lambda: len(started) == 2)

    await worker.stop_taking_work()
    await js.publish(BACKUP_REQUESTED, b"late")  # arrives after we stopped taking work
    assert await work.drain(grace=2.0) == 1
    assert finished == [b"quick"]
    assert await pending_jobs(js) == 2  # "slow" went back to the queue, "late" never left

    redelivered: list[tuple[bytes, int]] = []

    async def second(msg: Msg) -> None:
        redelivered.append((msg.data, msg.metadata.num_delivered))

    other = make_worker(js, second, WorkTracker())
    await other.start()
    await wait_until(lambda: len(redelivered) == 2)
    await other.stop_taking_work()
    assert sorted(redelivered) == [(b"late", 1), (b"slow", 2)]
    async with asyncio.timeout(5):
        while await pending_jobs(js):
            await asyncio.sleep(0.05)


async def test_in_progress_acks_keep_a_long_job_from_redelivery(js: JetStreamContext) -> None:
    calls: list[int] = []

    async def handler(msg: Msg) -> None:
        calls.append(msg.metadata.num_delivered)
        await asyncio.sleep(2.5)  # longer than ack_wait (1 s)

    work = WorkTracker()
    worker = make_worker(js, handler, work)
    await worker.start()
    await js.publish(BACKUP_REQUESTED, b"long")
    await wait_until(lambda: len(calls) == 1)
    await work.drain(grace=10)
    await worker.stop_taking_work()
    assert calls == [1]
    assert await pending_jobs(js) == 0


async def test_concurrency_limit_and_crash_redelivery(js: JetStreamContext) -> None:
    running = 0
    peak = 0
    attempts: dict[bytes, int] = {}

    async def handler(msg: Msg) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        attempts[msg.data] = msg.metadata.num_delivered
        try:
            await asyncio.sleep(0.1)
            if msg.data == b"crash" and msg.metadata.num_delivered == 1:
                raise RuntimeError("handler bug")
        finally:
            running -= 1

    work = WorkTracker()
    worker = make_worker(js, handler, work, concurrency=1)
    await worker.start()
    for body in (b"a", b"b", b"crash"):
        await js.publish(BACKUP_REQUESTED, body)
    await wait_until(lambda: attempts.get(b"crash") == 2, within_s=20)
    await wait_until(lambda: running == 0)
    await worker.stop_taking_work()
    await work.drain(grace=5)
    assert peak == 1
    assert attempts == {b"a": 1, b"b": 1, b"crash": 2}
    assert await pending_jobs(js) == 0
