"""JetStream setup and the one way to put a message on the wire.

``ensure_streams`` creates or updates, idempotently, everything the services share
(every service calls it at start, any number of replicas at once):

* ``BM_JOBS`` — work-queue retention, file storage, no age limit: a job stays until an
  executor acks it. Its duplicate window (default 2 h) must cover the scheduler's
  catch-up window, so that a slot re-fired after a restart, or by a second scheduler,
  with the same ``Nats-Msg-Id`` is stored once.
* ``bm-executors`` — the durable pull consumer on ``BM_JOBS`` shared by every executor:
  explicit acks, ``ack_wait`` 60 s (executors send in-progress acks while a run goes
  on), at most ``max_deliver`` deliveries. A job whose last delivery fails stays in
  the work queue unconsumed, so an executor on its last attempt (the message's
  ``num_delivered == max_deliver``) records the failure and acks.
* ``BM_EVENTS`` — limits retention, file storage, 7 days / 1 GiB, oldest discarded
  first, so a subscriber that was down catches up; a short duplicate window makes a
  retried publish of the same event (same ``message_id``) land once.

Which subject goes where is defined in ``proto.subjects``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Final, TypeVar

from nats.aio.client import Client as NATS
from nats.errors import NoRespondersError
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    ConsumerInfo,
    DeliverPolicy,
    DiscardPolicy,
    PubAck,
    RetentionPolicy,
    StorageType,
    StreamConfig,
    StreamInfo,
)
from nats.js.errors import APIError, NoStreamResponseError, NotFoundError

from proto import subjects
from proto.base import Message, Reply, Request
from proto.codec import decode, encode
from services.common.errors import BackupManagerError, DependencyUnavailable

MSG_ID_HEADER: Final = "Nats-Msg-Id"

DEFAULT_JOBS_DUPLICATE_WINDOW_S: Final = 2 * 3600.0
DEFAULT_EVENTS_MAX_AGE_S: Final = 7 * 24 * 3600.0
DEFAULT_EVENTS_MAX_BYTES: Final = 1024**3
DEFAULT_EVENTS_DUPLICATE_WINDOW_S: Final = 120.0
DEFAULT_MAX_DELIVER: Final = 5
DEFAULT_ACK_WAIT_S: Final = 60.0
DEFAULT_MAX_ACK_PENDING: Final = 1000

_STREAM_NAME_IN_USE: Final = 10058  # created meanwhile by another replica

R = TypeVar("R", bound=Reply)

log = logging.getLogger(__name__)


class StreamSetupError(BackupManagerError):
    """JetStream refused our stream or consumer configuration, or has no stream
    where one is expected; the message says which and what to do."""

    code = "stream_setup"


class NoResponder(DependencyUnavailable):
    """Nobody answered a request (e.g. no executor is running)."""

    code = "no_responder"


@dataclass(frozen=True)
class Streams:
    """What ``ensure_streams`` left in place."""

    jobs: StreamInfo
    events: StreamInfo
    executors: ConsumerInfo


def jobs_stream_config(*, duplicate_window: float, replicas: int = 1) -> StreamConfig:
    return StreamConfig(
        name=subjects.JOBS_STREAM,
        description="BackupManager jobs, consumed once by the executors",
        subjects=list(subjects.JOB_SUBJECTS),
        retention=RetentionPolicy.WORK_QUEUE,
        storage=StorageType.FILE,
        discard=DiscardPolicy.OLD,
        duplicate_window=duplicate_window,
        num_replicas=replicas,
    )


def events_stream_config(
    *, max_age: float, max_bytes: int, duplicate_window: float, replicas: int = 1
) -> StreamConfig:
    return StreamConfig(
        name=subjects.EVENTS_STREAM,
        description="BackupManager lifecycle events, kept for subscribers to catch up",
        subjects=list(subjects.STORED_EVENT_SUBJECTS),
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        discard=DiscardPolicy.OLD,
        max_age=max_age,
        max_bytes=max_bytes,
        duplicate_window=min(duplicate_window, max_age),
        num_replicas=replicas,
    )


def executor_consumer_config(
    *, max_deliver: int, ack_wait: float, max_ack_pending: int
) -> ConsumerConfig:
    return ConsumerConfig(
        durable_name=subjects.EXECUTOR_DURABLE,
        description="Executors' shared pull consumer of the jobs",
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=ack_wait,
        max_deliver=max_deliver,
        max_ack_pending=max_ack_pending,
    )


async def ensure_streams(
    js: JetStreamContext,
    *,
    duplicate_window: float = DEFAULT_JOBS_DUPLICATE_WINDOW_S,
    events_max_age: float = DEFAULT_EVENTS_MAX_AGE_S,
    events_max_bytes: int = DEFAULT_EVENTS_MAX_BYTES,
    events_duplicate_window: float = DEFAULT_EVENTS_DUPLICATE_WINDOW_S,
    max_deliver: int = DEFAULT_MAX_DELIVER,
    ack_wait: float = DEFAULT_ACK_WAIT_S,
    max_ack_pending: int = DEFAULT_MAX_ACK_PENDING,
    replicas: int = 1,
) -> Streams:
    """Create the streams and the executors' consumer, or update them to this config.

    Safe to call any number of times, from any number of processes at once.
    ``duplicate_window`` (seconds) is the jobs stream's dedupe window; keep it at
    least as long as the scheduler's catch-up window.
    """
    jobs = await _ensure_stream(
        js, jobs_stream_config(duplicate_window=duplicate_window, replicas=replicas)
    )
    events = await _ensure_stream(
        js,
        events_stream_config(
            max_age=events_max_age,
            max_bytes=events_max_bytes,
            duplicate_window=events_duplicate_window,
            replicas=replicas,
        ),
    )
    consumer = executor_consumer_config(
        max_deliver=max_deliver, ack_wait=ack_wait, max_ack_pending=max_ack_pending
    )
    try:
        executors = await js.add_consumer(subjects.JOBS_STREAM, consumer)
    except APIError as exc:
        raise StreamSetupError(
            f"Cannot create or update consumer {subjects.EXECUTOR_DURABLE} on "
            f"{subjects.JOBS_STREAM}: {exc.description} — delete the consumer to let "
            "the executors recreate it"
        ) from exc
    return Streams(jobs=jobs, events=events, executors=executors)


async def _ensure_stream(js: JetStreamContext, config: StreamConfig) -> StreamInfo:
    name = config.name or ""
    try:
        await js.stream_info(name)
    except NotFoundError:
        try:
            return await js.add_stream(config)
        except APIError as exc:
            if exc.err_code != _STREAM_NAME_IN_USE:
                raise _setup_error("create", name, exc) from exc
    try:
        return await js.update_stream(config)
    except APIError as exc:
        raise _setup_error("update", name, exc) from exc


def _setup_error(verb: str, name: str, exc: APIError) -> StreamSetupError:
    return StreamSetupError(
        f"Cannot {verb} stream {name}: {exc.description} (JetStream error {exc.err_code}) "
        "— a setting that cannot change in place (retention, storage) needs the stream "
        "deleted, and no other stream may hold bm.v1 subjects"
    )


async def publish(
    target: NATS | JetStreamContext,
    msg: Message,
    *,
    msg_id: str | None = None,
    ack_timeout_s: float | None = None,
) -> PubAck | None:
    """Publish ``msg`` on its subject as JSON, with a ``Nats-Msg-Id`` header.

    ``msg_id`` defaults to the message's ``message_id``, so publishing the same
    message object again is deduplicated; the scheduler passes
    ``"<schedule_id>:<slot>"``. Stored subjects go through JetStream (the client is
    turned into a JetStream context) and return the ``PubAck`` — ``ack.duplicate``
    tells a deduplicated publish. Core-only subjects (progress) need the client and
    return ``None``. Requests go through :func:`request`.
    """
    if isinstance(msg, Request):
        raise TypeError(f"{msg.SUBJECT} is a request; send it with request()")
    subject = msg.SUBJECT
    headers = {MSG_ID_HEADER: msg_id or str(msg.message_id)}
    payload = encode(msg)
    stream = subjects.stream_of(subject)
    if stream is None:
        if not isinstance(target, NATS):
            raise TypeError(f"{subject} is core NATS only; publish it with the NATS client")
        await target.publish(subject, payload, headers=headers)
        return None
    js = target.jetstream() if isinstance(target, NATS) else target
    try:
        return await js.publish(
            subject, payload, timeout=ack_timeout_s, stream=stream, headers=headers
        )
    except NoStreamResponseError as exc:
        raise StreamSetupError(
            f"No JetStream stream stored {subject} (expected {stream}); "
            "ensure_streams has not run or JetStream is not enabled on the server"
        ) from exc
    except APIError as exc:
        raise StreamSetupError(
            f"JetStream refused {subject} for stream {stream}: {exc.description}"
        ) from exc


async def publish_or_log(nc: NATS, event: Message) -> bool:
    """Publish an event whose loss must not fail the work it reports (the metadata
    DB row is the record; events follow it): a failure is logged, not raised."""
    try:
        await publish(nc, event)
    except Exception as exc:
        log.warning("could not publish %s: %s", event.SUBJECT, exc)
        return False
    return True


async def request(nc: NATS, msg: Request, reply_type: type[R], *, timeout_s: float) -> R:
    """Send a request and decode its reply; raise NoResponder when nobody answers."""
    if reply_type is not type(msg).REPLY:
        raise TypeError(f"{msg.SUBJECT} is answered by {type(msg).REPLY.__name__}")
    try:
        response = await nc.request(msg.SUBJECT, encode(msg), timeout=timeout_s)
    except NoRespondersError:
        raise NoResponder(
            f"Nothing is listening on {msg.SUBJECT} — is an executor running?"
        ) from None
    except TimeoutError:
        raise NoResponder(f"No answer on {msg.SUBJECT} within {timeout_s:g} s") from None
    return decode(reply_type, response.data)
