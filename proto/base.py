"""Base classes of every wire model, and the field types they share.

Unknown fields
    Models are built with ``extra="forbid"``: a producer that misspells a field, or
    sends one the contract does not have, fails at once (and mypy sees the typo).
    Consumers are lenient instead: :func:`proto.codec.decode` validates with
    ``extra="ignore"``, so a v1 consumer accepts a message from a newer v1 producer
    that carries *new optional fields* ("an optional new field stays v1"). For the same
    reason the exported JSON Schemas say ``additionalProperties: true``. Anything else —
    a removed or renamed field, a new required field, a changed type, a new enum
    member — is v2 and gets new subjects beside v1.

Envelope
    Every message carries ``message_id`` (a fresh UUID, also used as the default
    ``Nats-Msg-Id`` so a retried publish is stored once) and ``occurred_at`` (UTC).
    There is no ``schema_version`` field: the version is the ``v1`` in the subject,
    which every subscriber already sees.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, ClassVar

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints


def _to_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


def utc_now() -> datetime:
    return datetime.now(UTC)


UtcDatetime = Annotated[AwareDatetime, AfterValidator(_to_utc)]
"""A timezone-aware instant, normalised to UTC (``...Z`` on the wire); naive is refused."""

Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
"""Lower-case hex SHA-256 digest."""

ErrorCode = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
"""Machine-readable error code (``timeout``, ``auth_failed``, ...). An open set on
purpose: a new code stays v1, where a new enum member would not."""

SafeText = Annotated[str, StringConstraints(max_length=4000)]
"""Text safe to show a person: never a secret (credentials stay in the metadata DB)."""

ArtifactKey = Annotated[str, StringConstraints(min_length=1, max_length=1024)]
"""Key of an artifact inside a destination (``<project>/<database>/<yyyy/mm/dd>/...``)."""


class WireModel(BaseModel):
    """A value on the wire: frozen, strict about unknown fields when built in code."""

    # Written out here (not a shared variable) so the pydantic mypy plugin sees
    # frozen and extra="forbid": a misspelt field is a type error.
    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        use_attribute_docstrings=True,
        json_schema_serialization_defaults_required=True,
        json_schema_extra={"additionalProperties": True},
    )


class Envelope(WireModel):
    """Fields every message and reply carries."""

    message_id: uuid.UUID = Field(default_factory=uuid.uuid4)
    """Unique id of this message; the default ``Nats-Msg-Id`` for dedupe."""
    occurred_at: UtcDatetime = Field(default_factory=utc_now)
    """When the producer created the message (UTC)."""


class Message(Envelope):
    """A message published on its own subject (job, event or request)."""

    SUBJECT: ClassVar[str]


class Job(Message):
    """A command (``bm.v1.<noun>.requested``) stored in the jobs work-queue stream."""


class Event(Message):
    """Something that happened (``bm.v1.<noun>.<verb-past>``); see ``proto.subjects``
    for which events are stored and which are core NATS only."""


class Reply(Envelope):
    """The answer to a :class:`Request`, sent to the request's reply inbox."""


class Request(Message):
    """A core NATS request (``bm.v1.<noun>.<verb>``) answered by one :class:`Reply`."""

    REPLY: ClassVar[type[Reply]]
