"""Which model travels on which subject, built once from the model modules."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from proto import backup_events, jobs, requests, restore_events, schedule_events, storage_events
from proto.base import Message, Reply, Request
from proto.codec import ProtoError, decode

MODEL_MODULES = (
    jobs,
    requests,
    backup_events,
    restore_events,
    schedule_events,
    storage_events,
)


def _collect() -> dict[str, type[Message]]:
    found: dict[str, type[Message]] = {}
    for module in MODEL_MODULES:
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, Message)
                and value.__module__ == module.__name__
                and "SUBJECT" in vars(value)
            ):
                other = found.setdefault(value.SUBJECT, value)
                if other is not value:
                    raise RuntimeError(
                        f"{value.SUBJECT} has two models: {other.__name__} and {value.__name__}"
                    )
    return found


MODELS: Mapping[str, type[Message]] = MappingProxyType(dict(sorted(_collect().items())))
"""Subject -> the one model published on it."""

REPLIES: Mapping[str, type[Reply]] = MappingProxyType(
    {subject: model.REPLY for subject, model in MODELS.items() if issubclass(model, Request)}
)
"""Request subject -> the model of its reply."""


def model_for(subject: str) -> type[Message]:
    try:
        return MODELS[subject]
    except KeyError:
        raise ProtoError(f"Unknown subject {subject!r}: no v1 model is published on it") from None


def decode_subject(subject: str, data: bytes | bytearray | str) -> Message:
    """Decode a message received on ``subject`` with that subject's model."""
    return decode(model_for(subject), data)
