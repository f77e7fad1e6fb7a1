"""Result processing of the shared column types: SQLite's timestamp text and
UUIDs that repeat down a list."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.dialects import postgresql, sqlite

from services.common.db.types import RepeatedUuid, UTCDateTime

SQLITE = sqlite.dialect()


@pytest.mark.parametrize(
    ("stored", "expected"),
    [
        ("2026-11-28 05:52:29.787340", datetime(2026, 11, 28, 5, 52, 29, 787340, tzinfo=UTC)),
        ("2026-11-28 05:52:29", datetime(2026, 11, 28, 5, 52, 29, tzinfo=UTC)),
        ("2026-11-28", datetime(2026, 11, 28, tzinfo=UTC)),  # not ours, still read
        ("2026-11-28 07:52:29+02:00", datetime(2026, 11, 28, 5, 52, 29, tzinfo=UTC)),
        (None, None),
    ],
)
def test_sqlite_text_comes_back_aware_in_utc(stored: str | None, expected: datetime) -> None:
    process = UTCDateTime().result_processor(SQLITE, None)
    value = process(stored)
    assert value == expected
    if value is not None:
        assert value.utcoffset() == timedelta(0)
        assert value.tzinfo is UTC


def test_a_repeated_uuid_is_parsed_once_and_equals_the_plain_one() -> None:
    process = RepeatedUuid().result_processor(SQLITE, None)
    ident = uuid.uuid4()
    first, second = process(ident.hex), process(ident.hex)
    assert isinstance(first, uuid.UUID)
    assert first == ident
    assert first is second
    assert process(None) is None


def test_what_a_repeated_uuid_remembers_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(RepeatedUuid, "REMEMBERED", 2)
    process = RepeatedUuid().result_processor(SQLITE, None)
    a, b, c = (uuid.uuid4().hex for _ in range(3))
    first_a = process(a)
    assert process(b) is process(b)
    process(c)  # a third value: what was remembered is forgotten
    again = process(a)
    assert again == first_a
    assert again is not first_a


def test_a_driver_that_gives_uuids_itself_gets_no_processing() -> None:
    asyncpg = postgresql.asyncpg.dialect()  # type: ignore[no-untyped-call]
    assert RepeatedUuid().result_processor(asyncpg, None) is None
