"""Publishing a burst of jobs with their acks collected on one subscription: every
message stored once, a repeated message id counted as published (deduplicated), and
a missing stream reported per message."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import nats
import nats.errors
import pytest
from nats.aio.client import Client as NATS

from proto.backup_events import BackupProgressed
from proto.jobs import BackupRequested
from proto.values import Trigger
from services.common.streams import StreamSetupError, ensure_streams
from services.scheduler.publisher import PublishFailed, publish_all
from tests.scheduler.conftest import jobs, msg_ids
from tests.servers import NatsServer

pytestmark = pytest.mark.integration


def job() -> BackupRequested:
    return BackupRequested(
        backup_id=uuid.uuid4(),
        project_id=uuid.uuid4(),
        database_id=uuid.uuid4(),
        schedule_id=uuid.uuid4(),
        trigger=Trigger.SCHEDULE,
        slot_at=datetime(2024, 3, 1, tzinfo=UTC),
        destination_ids=(uuid.uuid4(),),
    )


async def test_a_burst_is_stored_once_each_and_repeats_are_deduplicated(nc: NATS) -> None:
    burst = [(job(), f"id-{n}") for n in range(3000)]
    acked: list[int] = []
    assert await publish_all(nc, burst, timeout_s=30, acked=acked.append) == [None] * 3000
    assert sorted(acked) == list(range(3000))
    again = await publish_all(nc, [*burst[:10], (job(), "id-new")], timeout_s=30)
    assert again == [None] * 11
    assert sorted(msg_ids(await jobs(nc))) == sorted([*(f"id-{n}" for n in range(3000)), "id-new"])


async def test_nothing_to_publish(nc: NATS) -> None:
    assert await publish_all(nc, [], timeout_s=1) == []


async def test_without_the_stream_each_message_reports_it(nats_server: NatsServer) -> None:
    bare: NATS = await nats.connect(nats_server.url)  # ensure_streams never ran
    try:
        results = await publish_all(bare, [(job(), "a"), (job(), "b")], timeout_s=10)
    finally:
        await bare.close()
    assert all(isinstance(r, StreamSetupError) for r in results)
    assert "No JetStream stream stored bm.v1.backup.requested" in str(results[0])


async def test_only_stored_subjects_go_this_way(nc: NATS) -> None:
    progress = BackupProgressed(
        backup_id=uuid.uuid4(),
        project_id=uuid.uuid4(),
        database_id=uuid.uuid4(),
        bytes_in=0,
        bytes_out=0,
        rate_bps=0,
        elapsed_s=0,
    )
    with pytest.raises(TypeError, match="not stored by JetStream"):
        await publish_all(nc, [(progress, "x")], timeout_s=1)


async def test_a_server_that_stops_answering_fails_the_burst_in_bounded_time(
    nats_server: NatsServer,
) -> None:
    client: NATS = await nats.connect(
        nats_server.url, allow_reconnect=True, max_reconnect_attempts=-1, reconnect_time_wait=0.2
    )
    await ensure_streams(client.jetstream())
    nats_server.stop()
    burst = [(job(), f"id-{n}") for n in range(1500)]
    try:
        async with asyncio.timeout(15):
            results = await publish_all(client, burst, timeout_s=1)
        assert all(isinstance(r, PublishFailed) for r in results)
        assert "not sent" in str(results[-1])
    except (nats.errors.Error, OSError):
        pass  # the client noticed the disconnect first and refused to publish
    finally:
        await client.close()
