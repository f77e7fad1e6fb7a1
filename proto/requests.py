"""Requests answered over core NATS request/reply by an executor — the process that
has the database drivers and the network reach to the databases."""

from __future__ import annotations

import uuid
from typing import Annotated, ClassVar

from pydantic import (
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    StringConstraints,
    model_validator,
)

from proto import subjects
from proto.base import ErrorCode, Reply, Request, SafeText
from proto.values import Engine


class DatabaseTestReply(Reply):
    """The result of a connection test. Errors are messages a person can act on
    ("Cannot reach orders-db at 10.0.0.5:5432: connection refused ...")."""

    database_id: uuid.UUID
    ok: bool
    executor_id: Annotated[str, StringConstraints(min_length=1, max_length=255)]
    """Which executor answered."""
    engine: Engine | None = None
    """``None`` only when the database could not be looked up."""
    server_version: Annotated[str, StringConstraints(max_length=255)] | None = None
    database_size_bytes: NonNegativeInt | None = None
    """Size of the database where the engine reports one."""
    latency_ms: NonNegativeFloat | None = None
    """Round trip of a trivial query."""
    error_code: ErrorCode | None = None
    """``unreachable``, ``refused``, ``timeout``, ``auth_failed``, ``database_missing``,
    ``tls_required``, ``not_found``, ..."""
    error: SafeText | None = None

    @model_validator(mode="after")
    def _error_iff_not_ok(self) -> DatabaseTestReply:
        if self.ok and (self.error_code or self.error):
            raise ValueError("a successful test carries no error")
        if not self.ok and not (self.error_code and self.error):
            raise ValueError("a failed test needs error_code and error")
        return self


class DatabaseTestRequest(Request):
    """Test the connection to a stored database (credentials are looked up by id)."""

    SUBJECT: ClassVar[str] = subjects.DATABASE_TEST
    REPLY: ClassVar[type[Reply]] = DatabaseTestReply

    database_id: uuid.UUID
    requested_by: uuid.UUID | None = None
    timeout_s: PositiveFloat = 10.0
    """How long the executor may probe; the requester waits a little longer."""
