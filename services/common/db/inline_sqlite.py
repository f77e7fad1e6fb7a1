"""Read-only SQLite sessions that run on the event loop itself.

aiosqlite runs every call (open a cursor, execute, fetch, close, commit) on a thread
of its own: four or more thread round trips per statement, each of which waits for
a free CPU and for the GIL. For a page read through an index of a local file — well
under a millisecond of SQLite's own work — those hops cost more than the query, and
under load they make most of a request's latency. This connection is aiosqlite's
minus the thread: each call runs at once, in the caller's thread.

Only for reads: a write could wait on another process's lock (``busy_timeout``) and
stall the whole event loop meanwhile. ``read_engine`` opens connections with
``PRAGMA query_only`` (a write fails at once) and a short busy timeout; in WAL mode
readers do not wait for writers anyway.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Generator
from functools import partial
from typing import Any

import aiosqlite


class InlineConnection(aiosqlite.Connection):
    """An ``aiosqlite.Connection`` whose calls run in place (no worker thread)."""

    def __init__(self, connector: Callable[[], sqlite3.Connection], iter_chunk_size: int) -> None:
        super().__init__(connector, iter_chunk_size)  # its thread is never started

    async def _execute(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if not self._running or self._connection is None:
            raise ValueError("Connection closed")
        return fn(*args, **kwargs)

    async def _connect(self) -> InlineConnection:
        if self._connection is None:
            self._connection = self._connector()
        return self

    def __await__(self) -> Generator[Any, None, InlineConnection]:
        return self._connect().__await__()

    def stop(self) -> None:
        self._running = False
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    async def close(self) -> None:
        self.stop()

    def __del__(self) -> None:
        # An engine nobody disposed (a test's): nothing to warn about, no thread to
        # stop; just close the file.
        self.stop()


def connect_inline(database: str, *, iter_chunk_size: int = 64, **kwargs: Any) -> InlineConnection:
    """Used as SQLAlchemy's ``async_creator_fn`` for the aiosqlite dialect."""
    return InlineConnection(partial(sqlite3.connect, str(database), **kwargs), iter_chunk_size)
