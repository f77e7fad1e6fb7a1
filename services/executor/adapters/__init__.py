"""Engine adapters, one module per engine, looked up by engine name.

An adapter's module is imported on the first use of its engine: each one pulls in
its engine's driver (asyncpg, aiomysql/pymysql, motor/pymongo, redis), and an
executor that only backs up PostgreSQL should not carry the other three (16-19 MiB
of memory; see docs/benchmarks.md)."""

from __future__ import annotations

import importlib

from services.common.errors import BackupManagerError
from services.executor.adapters.base import Adapter

# engine -> (module, class); the class's ``engine`` is the key
MODULES: dict[str, tuple[str, str]] = {
    "postgresql": ("services.executor.adapters.postgres", "PostgresAdapter"),
    "mysql": ("services.executor.adapters.mysql", "MySQLAdapter"),
    "mariadb": ("services.executor.adapters.mysql", "MariaDBAdapter"),
    "mongodb": ("services.executor.adapters.mongodb", "MongoAdapter"),
    "redis": ("services.executor.adapters.redis", "RedisAdapter"),
}

# The adapters loaded so far, one instance per engine.
ADAPTERS: dict[str, Adapter] = {}


class UnknownEngine(BackupManagerError):
    code = "unknown_engine"


def adapter_for(engine: str) -> Adapter:
    adapter = ADAPTERS.get(engine)
    if adapter is not None:
        return adapter
    try:
        module_name, class_name = MODULES[engine]
    except KeyError:
        raise UnknownEngine(f"no adapter for engine {engine!r} on this executor") from None
    adapter_class: type[Adapter] = getattr(importlib.import_module(module_name), class_name)
    adapter = ADAPTERS[engine] = adapter_class()
    return adapter
