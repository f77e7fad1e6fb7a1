"""Wire contracts: one model per subject, naming rules, JSON round trips, readable
errors, forward-compatible decoding, and exported schemas that are not stale."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

import proto
from proto import export, subjects
from proto.base import Envelope, Event, Job, Message, Reply, Request
from proto.codec import ProtoError, decode, encode
from proto.registry import MODELS, REPLIES, decode_subject, model_for
from proto.values import (
    ArtifactCopy,
    Compression,
    CompressionAlgorithm,
    CopyStatus,
    Engine,
    OverlapPolicy,
    RestoreMode,
    RestorePurpose,
    ScheduleChange,
    Trigger,
)

T0 = datetime(2024, 3, 31, 1, 30, tzinfo=UTC)
SHA = "ab" * 32


def uid(n: int) -> uuid.UUID:
    return uuid.UUID(int=n)


BACKUP = {"backup_id": uid(1), "project_id": uid(2), "database_id": uid(3)}
RESTORE = {"restore_id": uid(4), "project_id": uid(2), "backup_id": uid(1)}

EXAMPLES: list[Envelope] = [
    proto.BackupRequested(
        **BACKUP,
        schedule_id=uid(5),
        trigger=Trigger.SCHEDULE,
        slot_at=T0,
        timeout_s=3600,
        compression=Compression(algorithm=CompressionAlgorithm.ZSTD, level=19),
        age_recipients=("age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p",),
        destination_ids=(uid(6), uid(7)),
        overlap=OverlapPolicy.QUEUE,
    ),
    proto.RestoreRequested(
        **RESTORE,
        source_destination_id=uid(6),
        target_database_id=uid(3),
        target_database_name="orders_restored",
        mode=RestoreMode.REPLACE,
        no_owner=True,
        requested_by=uid(8),
    ),
    proto.DatabaseTestRequest(database_id=uid(3), requested_by=uid(8), timeout_s=5),
    proto.DatabaseTestReply(
        database_id=uid(3),
        ok=True,
        executor_id="executor-1",
        engine=Engine.POSTGRESQL,
        server_version="16.2",
        database_size_bytes=123_456,
        latency_ms=0.8,
    ),
    proto.BackupStarted(
        **BACKUP, trigger=Trigger.MANUAL, engine=Engine.MYSQL, executor_id="ex-2", attempt=2
    ),
    proto.BackupProgressed(
        **BACKUP, bytes_in=10, bytes_out=3, rate_bps=5.0, elapsed_s=2.0, estimated_total_bytes=99
    ),
    proto.BackupCompleted(
        **BACKUP,
        schedule_id=uid(5),
        engine=Engine.REDIS,
        artifact_key="p/d/2024/03/31/20240331T013000Z-1.rdb.zst",
        size_bytes=1000,
        raw_bytes=5000,
        sha256=SHA,
        compression=Compression(),
        encrypted=False,
        copies=(
            ArtifactCopy(destination_id=uid(6), status=CopyStatus.STORED),
            ArtifactCopy(destination_id=uid(7), status=CopyStatus.FAILED, error="disk full"),
        ),
        started_at=T0,
        finished_at=T0 + timedelta(seconds=42),
        duration_s=42.0,
        warnings=("size fell 80% below the previous run",),
    ),
    proto.BackupFailed(
        **BACKUP, code="auth_failed", message="Password rejected", attempt=5, duration_s=1.5
    ),
    proto.BackupDeleted(
        **BACKUP, artifact_key="p/d/x.dump", size_bytes=10, reason="retention: keep_last 7"
    ),
    proto.BackupVerified(**BACKUP, passed=False, restore_id=uid(4), detail="orders: 3 != 4"),
    proto.BackupMissed(**BACKUP | {"schedule_id": uid(5)}, slot_at=T0, reason="beyond grace"),
    proto.BackupSkipped(**BACKUP, slot_at=T0, reason="still running", running_backup_id=uid(9)),
    proto.BackupCorrupted(
        **BACKUP,
        destination_id=uid(6),
        artifact_key="p/d/x.dump",
        expected_sha256=SHA,
        actual_sha256="cd" * 32,
        expected_size=10,
        actual_size=10,
    ),
    proto.RestoreStarted(**RESTORE, mode=RestoreMode.INTO_EMPTY, executor_id="ex-1"),
    proto.RestoreProgressed(**RESTORE, bytes_in=1, bytes_out=2, rate_bps=1.0, elapsed_s=1.0),
    proto.RestoreCompleted(
        **RESTORE, purpose=RestorePurpose.VERIFY, bytes_restored=2000, duration_s=3.0
    ),
    proto.RestoreFailed(**RESTORE, code="checksum_mismatch", message="Checksum differs"),
    proto.ScheduleChanged(
        schedule_id=uid(5),
        project_id=uid(2),
        database_id=uid(3),
        change=ScheduleChange.DISABLED,
        enabled=False,
        changed_by=uid(8),
    ),
    proto.StorageLowSpaceDetected(
        destination_id=uid(6), free_bytes=1, total_bytes=100, threshold_bytes=10
    ),
    proto.StorageOrphansFound(
        destination_id=uid(6),
        orphan_count=2,
        orphan_bytes=20,
        orphan_keys=("p/d/a.tmp", "p/d/b.dump"),
        missing_count=1,
        missing_backup_ids=(uid(1),),
        removed_count=1,
        removed_bytes=10,
    ),
]


def _concrete_messages() -> list[type[Message]]:
    found: list[type[Message]] = []
    pending: list[type[Message]] = [Message]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if "SUBJECT" in vars(cls):
            found.append(cls)
    return found


def _id(example: Envelope) -> str:
    return type(example).__name__


# -- one model per subject ----------------------------------------------------------


def test_subject_constants_are_unique() -> None:
    assert len(set(subjects.ALL_SUBJECTS)) == len(subjects.ALL_SUBJECTS)
    assert not set(subjects.STORED_EVENT_SUBJECTS) & set(subjects.CORE_EVENT_SUBJECTS)


def test_every_subject_has_exactly_one_model_and_every_model_a_subject() -> None:
    models = _concrete_messages()
    model_subjects = [m.SUBJECT for m in models]
    assert len(model_subjects) == len(set(model_subjects)), "a subject has two models"
    assert sorted(model_subjects) == sorted(subjects.ALL_SUBJECTS)
    assert set(MODELS.values()) == set(models)


def test_model_kind_matches_subject_group() -> None:
    for subject, model in MODELS.items():
        if subject in subjects.JOB_SUBJECTS:
            assert issubclass(model, Job), subject
            assert subjects.stream_of(subject) == subjects.JOBS_STREAM
        elif subject in subjects.REQUEST_SUBJECTS:
            assert issubclass(model, Request), subject
            assert subjects.stream_of(subject) is None
        elif subject in subjects.STORED_EVENT_SUBJECTS:
            assert issubclass(model, Event), subject
            assert subjects.stream_of(subject) == subjects.EVENTS_STREAM
        else:
            assert subject in subjects.CORE_EVENT_SUBJECTS
            assert issubclass(model, Event), subject
            assert subjects.stream_of(subject) is None


def test_every_request_has_a_reply_model() -> None:
    requests = {s: m for s, m in MODELS.items() if issubclass(m, Request)}
    assert set(REPLIES) == set(requests) == set(subjects.REQUEST_SUBJECTS)
    for subject, reply in REPLIES.items():
        assert issubclass(reply, Reply)
        assert reply.__name__ == requests[subject].__name__.removesuffix("Request") + "Reply"


# -- naming rules ---------------------------------------------------------------------

SUBJECT_RE = re.compile(r"^bm\.v1\.(?P<noun>[a-z]+)\.(?P<verb>[a-z]+(?:_[a-z]+)*)$")
IRREGULAR_PAST = {"found", "sent", "lost", "run", "begun", "taken", "made", "kept"}


def _is_past_tense(word: str) -> bool:
    return word.endswith("ed") or word in IRREGULAR_PAST


def _camel(token: str) -> str:
    return "".join(part.capitalize() for part in token.split("_"))


@pytest.mark.parametrize("subject", sorted(MODELS))
def test_subject_and_model_names_follow_the_pattern(subject: str) -> None:
    match = SUBJECT_RE.match(subject)
    assert match, f"{subject} is not bm.v1.<noun>.<verb>"
    noun, verb = match["noun"], match["verb"]
    model = MODELS[subject]
    last_word = verb.split("_")[-1]
    if issubclass(model, Job):
        assert verb == "requested", f"job {subject} must be bm.v1.<noun>.requested"
        assert model.__name__ == _camel(noun) + "Requested"
    elif issubclass(model, Request):
        assert not _is_past_tense(last_word), f"request {subject} takes an imperative verb"
        assert model.__name__ == _camel(noun) + _camel(verb) + "Request"
    else:
        assert issubclass(model, Event)
        assert _is_past_tense(last_word), f"event {subject} must end in a past-tense verb"
        assert last_word != "requested", f"event {subject} reads like a command"
        assert model.__name__ == _camel(noun) + _camel(verb)


def test_streams_and_durable_names_are_valid_jetstream_names() -> None:
    for name in (subjects.JOBS_STREAM, subjects.EVENTS_STREAM, subjects.EXECUTOR_DURABLE):
        assert re.fullmatch(r"[A-Za-z0-9_-]+", name), name


# -- encoding -------------------------------------------------------------------------


def test_examples_cover_every_model_and_reply() -> None:
    covered = {type(example) for example in EXAMPLES}
    assert covered == set(MODELS.values()) | set(REPLIES.values())


@pytest.mark.parametrize("example", EXAMPLES, ids=_id)
def test_round_trip(example: Envelope) -> None:
    data = encode(example)
    assert isinstance(data, bytes)
    assert decode(type(example), data) == example
    if isinstance(example, Message):
        assert decode_subject(example.SUBJECT, data) == example
        assert model_for(example.SUBJECT) is type(example)


@pytest.mark.parametrize("example", EXAMPLES, ids=_id)
def test_wire_form_has_string_ids_and_utc_times(example: Envelope) -> None:
    body = json.loads(encode(example))
    assert uuid.UUID(body["message_id"]) == example.message_id
    assert body["occurred_at"].endswith("Z")
    if "backup_id" in body and body["backup_id"] is not None:
        assert body["backup_id"] == str(uid(1))


@pytest.mark.parametrize("example", EXAMPLES, ids=_id)
def test_models_are_frozen(example: Envelope) -> None:
    with pytest.raises(ValidationError):
        example.message_id = uid(99)  # type: ignore[misc]


def test_times_must_be_aware_and_become_utc() -> None:
    tokyo = timezone(timedelta(hours=9))
    scheduled = BACKUP | {"schedule_id": uid(5)}
    msg = proto.BackupMissed(**scheduled, slot_at=T0.astimezone(tokyo), reason="x")
    assert msg.slot_at == T0
    assert msg.slot_at.tzinfo is UTC
    assert json.loads(encode(msg))["slot_at"] == "2024-03-31T01:30:00Z"
    with pytest.raises(ValidationError, match="timezone"):
        proto.BackupMissed(**scheduled, slot_at=datetime(2024, 1, 1), reason="x")


# -- compatibility and errors -----------------------------------------------------------


def test_decode_ignores_fields_added_by_a_newer_v1_producer() -> None:
    example = EXAMPLES[0]
    body = json.loads(encode(example))
    body["added_in_v1_1"] = {"anything": [1, 2]}
    body["compression"]["window_log"] = 27
    assert decode(type(example), json.dumps(body)) == example


def test_building_a_model_with_an_unknown_field_fails() -> None:
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        proto.ScheduleChanged(  # type: ignore[call-arg]
            schedule_id=uid(5),
            project_id=uid(2),
            database_id=uid(3),
            change=ScheduleChange.CREATED,
            enabled=True,
            cron="* * * * *",
        )


def test_invalid_payload_gives_a_readable_proto_error() -> None:
    body = json.loads(encode(EXAMPLES[6]))  # BackupCompleted
    body["sha256"] = "not-a-digest"
    del body["size_bytes"]
    with pytest.raises(ProtoError) as caught:
        decode(proto.BackupCompleted, json.dumps(body))
    text = str(caught.value)
    assert text.startswith("Invalid bm.v1.backup.completed message: ")
    assert "sha256: String should match pattern" in text
    assert "size_bytes: Field required" in text
    assert "not-a-digest" not in text  # values are never echoed


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"not json", "Invalid JSON"),
        (b"[1, 2]", "Input should be an object"),
        (b"", "Invalid JSON"),
        (b'{"database_id": "nope"}', "database_id: Input should be a valid UUID"),
    ],
)
def test_garbage_gives_proto_error(data: bytes, expected: str) -> None:
    with pytest.raises(ProtoError, match=r"^Invalid bm\.v1\.database\.test message: ") as caught:
        decode(proto.DatabaseTestRequest, data)
    assert expected in str(caught.value)


def test_many_errors_are_summarised() -> None:
    with pytest.raises(ProtoError, match=r"and \d+ more error\(s\)$"):
        decode(proto.BackupCompleted, b"{}")


def test_reply_errors_name_the_model() -> None:
    with pytest.raises(ProtoError, match=r"^Invalid DatabaseTestReply: "):
        decode(proto.DatabaseTestReply, b"{}")


def test_unknown_subject() -> None:
    with pytest.raises(ProtoError, match=r"Unknown subject 'bm\.v1\.nothing\.happened'"):
        decode_subject("bm.v1.nothing.happened", b"{}")


# -- model rules ----------------------------------------------------------------------


def test_scheduled_backup_needs_schedule_and_slot() -> None:
    with pytest.raises(ValidationError, match="needs schedule_id and slot_at"):
        proto.BackupRequested(**BACKUP, trigger=Trigger.SCHEDULE, destination_ids=(uid(6),))
    with pytest.raises(ValidationError, match="destination_ids"):
        proto.BackupRequested(**BACKUP, trigger=Trigger.MANUAL, destination_ids=())


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"backup_id": None}, "exactly one of backup_id and upload_key"),
        ({"upload_key": "uploads/x.sql"}, "exactly one of backup_id and upload_key"),
        ({"target_database_id": None}, "needs target_database_id"),
        (
            {"purpose": RestorePurpose.VERIFY, "backup_id": None, "upload_key": "u/x"},
            "verification needs backup_id",
        ),
    ],
)
def test_restore_request_rules(fields: dict[str, Any], error: str) -> None:
    base: dict[str, Any] = RESTORE | {"target_database_id": uid(3)}
    with pytest.raises(ValidationError, match=error):
        proto.RestoreRequested(**(base | fields))


def test_verification_restore_needs_no_target() -> None:
    msg = proto.RestoreRequested(**RESTORE, purpose=RestorePurpose.VERIFY)
    assert msg.target_database_id is None


@pytest.mark.parametrize(
    ("algorithm", "level", "ok"),
    [
        (CompressionAlgorithm.ZSTD, 22, True),
        (CompressionAlgorithm.ZSTD, -7, True),
        (CompressionAlgorithm.ZSTD, 23, False),
        (CompressionAlgorithm.GZIP, 9, True),
        (CompressionAlgorithm.GZIP, 0, False),
        (CompressionAlgorithm.NONE, None, True),
        (CompressionAlgorithm.NONE, 1, False),
    ],
)
def test_compression_levels(algorithm: CompressionAlgorithm, level: int | None, ok: bool) -> None:
    if ok:
        assert Compression(algorithm=algorithm, level=level).level == level
    else:
        with pytest.raises(ValidationError):
            Compression(algorithm=algorithm, level=level)


def test_database_test_reply_has_an_error_exactly_when_not_ok() -> None:
    common: dict[str, Any] = {"database_id": uid(3), "executor_id": "ex"}
    proto.DatabaseTestReply(**common, ok=False, error_code="refused", error="Connection refused")
    with pytest.raises(ValidationError, match="needs error_code and error"):
        proto.DatabaseTestReply(**common, ok=False)
    with pytest.raises(ValidationError, match="carries no error"):
        proto.DatabaseTestReply(**common, ok=True, error_code="refused", error="x")


SECRET_WORDS = ("password", "passwd", "secret", "credential", "token", "private", "passphrase")


def _field_names(model: type[BaseModel]) -> set[str]:
    names = set(model.model_fields)
    for field in model.model_fields.values():
        for arg in (field.annotation, *getattr(field.annotation, "__args__", ())):
            for inner in (arg, *getattr(arg, "__args__", ())):
                if isinstance(inner, type) and issubclass(inner, BaseModel):
                    names |= _field_names(inner)
    return names


@pytest.mark.parametrize("model", [*MODELS.values(), *REPLIES.values()], ids=lambda m: m.__name__)
def test_no_message_has_a_field_for_a_secret(model: type[BaseModel]) -> None:
    for name in _field_names(model):
        assert not any(word in name for word in SECRET_WORDS), f"{model.__name__}.{name}"


# -- exported schemas -------------------------------------------------------------------


def test_committed_schemas_are_not_stale() -> None:
    stale = export.stale_files()
    assert not stale, f"stale schemas {stale}: run `python -m proto.export`"


def test_one_schema_per_subject_and_reply() -> None:
    names = set(export.render())
    assert names == {f"{s}.json" for s in subjects.ALL_SUBJECTS} | {
        f"{s}.reply.json" for s in REPLIES
    }


@pytest.mark.parametrize("example", EXAMPLES, ids=_id)
def test_schema_describes_what_producers_send(example: Envelope) -> None:
    name = (
        f"{example.SUBJECT}.json"
        if isinstance(example, Message)
        else f"{next(s for s, r in REPLIES.items() if r is type(example))}.reply.json"
    )
    schema = json.loads(export.render()[name])
    body = json.loads(encode(example))
    assert set(body) == set(schema["properties"]) == set(schema["required"])
    assert schema["additionalProperties"] is True
    if isinstance(example, Message):
        assert schema["x-bm-subject"] == example.SUBJECT
        assert schema["x-bm-stream"] == subjects.stream_of(example.SUBJECT)


def test_export_check_lists_stale_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert export.main(["--check", "--dir", str(tmp_path)]) == 1
    assert "bm.v1.backup.requested.json" in capsys.readouterr().err

    assert export.main(["--dir", str(tmp_path)]) == 0
    assert export.main(["--check", "--dir", str(tmp_path)]) == 0

    (tmp_path / "bm.v1.backup.completed.json").write_text("{}\n")
    (tmp_path / "bm.v1.gone.away.json").write_text("{}\n")
    capsys.readouterr()
    assert export.main(["--check", "--dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "bm.v1.backup.completed.json" in err
    assert "bm.v1.gone.away.json" in err
    assert "bm.v1.backup.failed.json" not in err

    export.main(["--dir", str(tmp_path)])
    assert not (tmp_path / "bm.v1.gone.away.json").exists()
    assert export.stale_files(tmp_path) == []
