"""Fixtures of the tests that run our services as real processes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from services.common.migrate import upgrade
from tests.processes import ServiceProcess


@pytest.fixture
async def migrated_url(sqlite_url: str) -> str:
    """A migrated metadata DB: the services run against one, as in production."""
    await upgrade(sqlite_url)
    return sqlite_url


@pytest.fixture
def processes() -> Iterator[list[ServiceProcess]]:
    """Services a test started; whatever still runs is stopped after it."""
    started: list[ServiceProcess] = []
    yield started
    for process in started:
        process.stop()
