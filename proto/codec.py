"""JSON on the wire: :func:`encode` a model, :func:`decode` bytes into one."""

from __future__ import annotations

from typing import TypeVar

from pydantic import ValidationError

from proto.base import Envelope, Message

E = TypeVar("E", bound=Envelope)

MAX_REPORTED_ERRORS = 5


class ProtoError(ValueError):
    """A payload is not a valid message of the expected kind. The message names the
    subject (or model) and each invalid field, never the field's value."""


def encode(msg: Envelope) -> bytes:
    """The message as compact UTF-8 JSON (UUIDs as strings, times as ``...Z``)."""
    return msg.model_dump_json().encode()


def decode(cls: type[E], data: bytes | bytearray | str) -> E:
    """Parse and validate ``data`` as ``cls``. Unknown fields are ignored, so newer
    v1 producers may add optional fields; anything else invalid raises ProtoError."""
    try:
        return cls.model_validate_json(data, extra="ignore")
    except ValidationError as exc:
        raise ProtoError(f"Invalid {describe(cls)}: {_summary(exc)}") from None


def describe(cls: type[Envelope]) -> str:
    """``bm.v1.backup.completed message`` for messages, the class name otherwise."""
    if issubclass(cls, Message) and hasattr(cls, "SUBJECT"):
        return f"{cls.SUBJECT} message"
    return cls.__name__


def _summary(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False, include_input=False)
    parts = []
    for error in errors[:MAX_REPORTED_ERRORS]:
        where = ".".join(str(part) for part in error["loc"])
        parts.append(f"{where}: {error['msg']}" if where else error["msg"])
    more = len(errors) - MAX_REPORTED_ERRORS
    if more > 0:
        parts.append(f"and {more} more error(s)")
    return "; ".join(parts)
