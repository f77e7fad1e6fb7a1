"""JetStream setup against a real nats-server: idempotent setup, dedupe of jobs,
work-queue consumption, bounded redelivery, events kept for late subscribers, core-only
progress, and request/reply."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import nats
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import RetentionPolicy, StreamConfig
from nats.js.errors import NotFoundError

import proto
from proto import subjects
from proto.registry import decode_subject
from proto.values import ArtifactCopy, Compression, CopyStatus, Engine, Trigger
from services.common.streams import (
    NoResponder,
    StreamSetupError,
    ensure_streams,
    publish,
    request,
)
from tests.servers import NatsServer

SLOT = datetime(2024, 5, 1, 2, 0, tzinfo=UTC)


@pytest.fixture
async def nc(nats_server: NatsServer) -> AsyncIterator[NATS]:
    client = await nats.connect(nats_server.url, connect_timeout=5, max_reconnect_attempts=0)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
def js(nc: NATS) -> JetStreamContext:
    return nc.jetstream()


def backup_job(schedule_id: uuid.UUID | None = None) -> proto.BackupRequested:
    schedule_id = schedule_id or uuid.uuid4()
    return proto.BackupRequested(
        backup_id=uuid.uuid4(),
        project_id=uuid.uuid4(),
        database_id=uuid.uuid4(),
        schedule_id=schedule_id,
        trigger=Trigger.SCHEDULE,
        slot_at=SLOT,
        destination_ids=(uuid.uuid4(),),
    )


def completed_event() -> proto.BackupCompleted:
    return proto.BackupCompleted(
        backup_id=uuid.uuid4(),
        project_id=uuid.uuid4(),
        database_id=uuid.uuid4(),
        engine=Engine.POSTGRESQL,
        artifact_key="p/d/2024/05/01/x.dump.zst",
        size_bytes=10,
        raw_bytes=100,
        sha256="0" * 64,
        compression=Compression(),
        encrypted=False,
        copies=(ArtifactCopy(destination_id=uuid.uuid4(), status=CopyStatus.STORED),),
        started_at=SLOT,
        finished_at=SLOT,
        duration_s=0.0,
    )


async def stream_messages(js: JetStreamContext, stream: str) -> int:
    info = await js.stream_info(stream)
    return info.state.messages


# -- setup ----------------------------------------------------------------------------


async def test_ensure_streams_is_idempotent_and_applies_changes(js: JetStreamContext) -> None:
    first = await ensure_streams(js)
    second = await ensure_streams(js)
    assert first.jobs.config == second.jobs.config
    assert first.events.config == second.events.config
    assert first.executors.config == second.executors.config

    jobs = second.jobs.config
    assert jobs.retention == RetentionPolicy.WORK_QUEUE
    assert jobs.duplicate_window == 2 * 3600
    assert sorted(jobs.subjects or []) == sorted(subjects.JOB_SUBJECTS)
    events = second.events.config
    assert events.retention == RetentionPolicy.LIMITS
    assert events.max_age == 7 * 24 * 3600
    assert events.max_bytes is not None
    assert events.max_bytes > 0
    consumer = second.executors.config
    assert consumer.durable_name == subjects.EXECUTOR_DURABLE
    assert consumer.max_deliver == 5
    assert consumer.ack_wait == 60

    changed = await ensure_streams(
        js, duplicate_window=600, events_max_age=3600, max_deliver=3, ack_wait=30
    )
    assert changed.jobs.config.duplicate_window == 600
    assert changed.events.config.max_age == 3600
    assert changed.executors.config.max_deliver == 3
    assert changed.executors.config.ack_wait == 30
    info = await js.consumer_info(subjects.JOBS_STREAM, subjects.EXECUTOR_DURABLE)
    assert info.config.max_deliver == 3


async def test_replicas_starting_together_all_succeed(nats_server: NatsServer) -> None:
    clients = [await nats.connect(nats_server.url) for _ in range(4)]
    try:
        results = await asyncio.gather(*(ensure_streams(c.jetstream()) for c in clients))
        assert {r.jobs.config.name for r in results} == {subjects.JOBS_STREAM}
    finally:
        for client in clients:
            await client.close()


async def test_incompatible_existing_stream_gives_a_clear_error(js: JetStreamContext) -> None:
    await js.add_stream(
        StreamConfig(
            name=subjects.JOBS_STREAM,
            subjects=list(subjects.JOB_SUBJECTS),
            retention=RetentionPolicy.LIMITS,
        )
    )
    with pytest.raises(StreamSetupError, match=rf"Cannot update stream {subjects.JOBS_STREAM}"):
        await ensure_streams(js)


async def test_subjects_of_the_two_streams_do_not_overlap(js: JetStreamContext) -> None:
    streams = await ensure_streams(js)
    jobs = set(streams.jobs.config.subjects or [])
    events = set(streams.events.config.subjects or [])
    assert not jobs & events
    assert not any("*" in s or ">" in s for s in jobs | events)

    for subject in subjects.ALL_SUBJECTS:
        expected = subjects.stream_of(subject)
        if expected is None:
            with pytest.raises(NotFoundError):
                await js.find_stream_name_by_subject(subject)
        else:
            assert await js.find_stream_name_by_subject(subject) == expected


# -- jobs -----------------------------------------------------------------------------


async def test_job_published_twice_with_the_same_msg_id_is_stored_once(
    nc: NATS, js: JetStreamContext
) -> None:
    await ensure_streams(js)
    job = backup_job()
    slot_id = f"{job.schedule_id}:{SLOT.isoformat()}"

    first = await publish(nc, job, msg_id=slot_id)
    again = await publish(js, job, msg_id=slot_id)
    # a second scheduler replica builds its own message for the same slot
    other_replica = await publish(js, backup_job(job.schedule_id), msg_id=slot_id)
    assert first is not None
    assert again is not None
    assert other_replica is not None
    assert not first.duplicate
    assert again.duplicate
    assert other_replica.duplicate
    assert await stream_messages(js, subjects.JOBS_STREAM) == 1

    next_slot = await publish(js, backup_job(job.schedule_id), msg_id=f"{job.schedule_id}:next")
    assert next_slot is not None
    assert not next_slot.duplicate
    assert await stream_messages(js, subjects.JOBS_STREAM) == 2


async def test_retried_publish_of_the_same_message_is_deduplicated(js: JetStreamContext) -> None:
    await ensure_streams(js)
    event = completed_event()
    await publish(js, event)
    ack = await publish(js, event)  # default Nats-Msg-Id is the message_id
    assert ack is not None
    assert ack.duplicate
    assert await stream_messages(js, subjects.EVENTS_STREAM) == 1


async def test_fetch_and_ack_removes_the_job_from_the_work_queue(js: JetStreamContext) -> None:
    await ensure_streams(js)
    job = backup_job()
    await publish(js, job)
    assert await stream_messages(js, subjects.JOBS_STREAM) == 1

    sub = await js.pull_subscribe_bind(
        durable=subjects.EXECUTOR_DURABLE, stream=subjects.JOBS_STREAM
    )
    try:
        [msg] = await sub.fetch(1, timeout=5)
        assert decode_subject(msg.subject, msg.data) == job
        assert msg.headers is not None
        assert msg.headers["Nats-Msg-Id"] == str(job.message_id)
        await msg.in_progress()
        await msg.ack_sync()
    finally:
        await sub.unsubscribe()
    assert await stream_messages(js, subjects.JOBS_STREAM) == 0


async def test_unacked_job_is_redelivered_a_bounded_number_of_times(
    js: JetStreamContext,
) -> None:
    await ensure_streams(js, ack_wait=0.5, max_deliver=2)
    await publish(js, backup_job())
    sub = await js.pull_subscribe_bind(
        durable=subjects.EXECUTOR_DURABLE, stream=subjects.JOBS_STREAM
    )
    try:
        deliveries = []
        for _ in range(2):
            [msg] = await sub.fetch(1, timeout=5)  # not acked: "the executor crashed"
            deliveries.append(msg.metadata.num_delivered)
        assert deliveries == [1, 2]
        with pytest.raises(nats.errors.TimeoutError):
            await sub.fetch(1, timeout=1.5)
    finally:
        await sub.unsubscribe()


async def test_publishing_before_setup_names_the_missing_stream(js: JetStreamContext) -> None:
    with pytest.raises(StreamSetupError, match="ensure_streams"):
        await publish(js, backup_job(), ack_timeout_s=2)


# -- events ---------------------------------------------------------------------------


async def test_events_stay_in_the_stream_after_a_consumer_read_them(
    js: JetStreamContext,
) -> None:
    await ensure_streams(js)
    event = completed_event()
    await publish(js, event)

    for durable in ("early-subscriber", "late-subscriber"):
        sub = await js.pull_subscribe(
            subjects.BACKUP_COMPLETED, durable=durable, stream=subjects.EVENTS_STREAM
        )
        try:
            [msg] = await sub.fetch(1, timeout=5)
            assert decode_subject(msg.subject, msg.data) == event
            await msg.ack_sync()
        finally:
            await sub.unsubscribe()
        assert await stream_messages(js, subjects.EVENTS_STREAM) == 1


async def test_progress_events_are_core_nats_only(nc: NATS, js: JetStreamContext) -> None:
    await ensure_streams(js)
    received: asyncio.Queue[Msg] = asyncio.Queue()

    async def on_message(msg: Msg) -> None:
        await received.put(msg)

    sub = await nc.subscribe(subjects.WILDCARD, cb=on_message)
    try:
        progress = proto.BackupProgressed(
            backup_id=uuid.uuid4(),
            project_id=uuid.uuid4(),
            database_id=uuid.uuid4(),
            bytes_in=1,
            bytes_out=1,
            rate_bps=1.0,
            elapsed_s=1.0,
        )
        assert await publish(nc, progress) is None
        msg = await asyncio.wait_for(received.get(), timeout=5)
        assert decode_subject(msg.subject, msg.data) == progress
        with pytest.raises(TypeError, match="core NATS only"):
            await publish(js, progress)
    finally:
        await sub.unsubscribe()
    assert await stream_messages(js, subjects.EVENTS_STREAM) == 0


# -- request / reply ------------------------------------------------------------------


async def test_request_reply_decodes_the_typed_reply(nc: NATS) -> None:
    database_id = uuid.uuid4()

    async def executor(msg: Msg) -> None:
        asked = decode_subject(msg.subject, msg.data)
        assert isinstance(asked, proto.DatabaseTestRequest)
        reply = proto.DatabaseTestReply(
            database_id=asked.database_id,
            ok=False,
            executor_id="executor-test",
            error_code="refused",
            error="Cannot reach orders-db at 10.0.0.5:5432: connection refused",
        )
        await msg.respond(proto.encode(reply))

    sub = await nc.subscribe(subjects.DATABASE_TEST, queue="executors", cb=executor)
    try:
        answer = await request(
            nc,
            proto.DatabaseTestRequest(database_id=database_id),
            proto.DatabaseTestReply,
            timeout_s=5,
        )
    finally:
        await sub.unsubscribe()
    assert answer.database_id == database_id
    assert not answer.ok
    assert answer.error_code == "refused"


async def test_request_without_an_executor_says_so(nc: NATS) -> None:
    with pytest.raises(NoResponder, match="is an executor running"):
        await request(
            nc,
            proto.DatabaseTestRequest(database_id=uuid.uuid4()),
            proto.DatabaseTestReply,
            timeout_s=2,
        )
