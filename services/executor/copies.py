"""One backup written to several destinations: each copy has its own fate. A
destination that fails (full, unwritable, unreachable, or storing other bytes than
were sent) loses its copy only; the run succeeds when at least one copy is stored,
with a warning naming the failed ones."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from services.common.db.models import Destination
from services.common.destinations.base import DestinationError, Driver, ReadBack, Writer


@dataclass
class Copy:
    destination: Destination
    driver: Driver
    writer: Writer | None = None
    error: str | None = None

    @property
    def alive(self) -> bool:
        return self.error is None

    def fail(self, exc: Exception | str) -> None:
        if self.error is None:
            self.error = str(exc)


class CopyWriter(Writer):
    """Passes bytes to one destination; a destination error is recorded on the copy
    instead of stopping the other copies."""

    def __init__(self, copy: Copy, inner: Writer) -> None:
        self.copy = copy
        self.inner = inner

    async def write(self, chunk: bytes) -> None:
        if not self.copy.alive:
            return
        try:
            await self.inner.write(chunk)
        except DestinationError as exc:
            self.copy.fail(exc)
            await self.inner.abort()

    async def commit(self) -> None:
        if not self.copy.alive:
            return
        try:
            await self.inner.commit()
        except DestinationError as exc:
            self.copy.fail(exc)

    async def read_back(self) -> ReadBack | None:
        return await self.inner.read_back()

    async def abort(self) -> None:
        with contextlib.suppress(DestinationError):
            await self.inner.abort()


async def open_copies(copies: list[Copy], key: str) -> list[Writer]:
    writers: list[Writer] = []
    for copy in copies:
        try:
            copy.writer = CopyWriter(copy, await copy.driver.open_writer(key))
        except DestinationError as exc:
            copy.fail(exc)
            continue
        writers.append(copy.writer)
    return writers


def failed_copies_warning(copies: list[Copy]) -> str | None:
    failed = [f"{c.destination.name}: {c.error}" for c in copies if not c.alive]
    if not failed:
        return None
    return "not stored on every destination — " + "; ".join(failed)
