"""Engine adapters, one module per engine, looked up by engine name."""

from __future__ import annotations

from services.common.errors import BackupManagerError
from services.executor.adapters.base import Adapter
from services.executor.adapters.mongodb import MongoAdapter
from services.executor.adapters.mysql import MariaDBAdapter, MySQLAdapter
from services.executor.adapters.postgres import PostgresAdapter
from services.executor.adapters.redis import RedisAdapter

ADAPTERS: dict[str, Adapter] = {
    adapter.engine: adapter
    for adapter in (
        PostgresAdapter(),
        MySQLAdapter(),
        MariaDBAdapter(),
        MongoAdapter(),
        RedisAdapter(),
    )
}


class UnknownEngine(BackupManagerError):
    code = "unknown_engine"


def adapter_for(engine: str) -> Adapter:
    try:
        return ADAPTERS[engine]
    except KeyError:
        raise UnknownEngine(f"no adapter for engine {engine!r} on this executor") from None
