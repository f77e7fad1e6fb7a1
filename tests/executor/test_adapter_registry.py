"""The adapter registry loads an engine's adapter (and its driver) on first use: every
engine still resolves, and an executor that has not used an engine has not
imported its driver."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from services.common.db.enums import DatabaseEngine
from services.executor.adapters import MODULES, UnknownEngine, adapter_for

REPO = Path(__file__).resolve().parents[2]
DRIVERS = ("asyncpg", "aiomysql", "pymysql", "motor", "pymongo", "redis")


@pytest.mark.parametrize("engine", list(DatabaseEngine))
def test_every_engine_resolves(engine: DatabaseEngine) -> None:
    adapter = adapter_for(engine.value)
    assert adapter.engine == engine.value
    assert adapter_for(engine.value) is adapter  # one instance per engine


def test_registry_names_every_engine_and_nothing_else() -> None:
    assert set(MODULES) == {engine.value for engine in DatabaseEngine}


def test_unknown_engine() -> None:
    with pytest.raises(UnknownEngine, match="no adapter for engine 'oracle'"):
        adapter_for("oracle")


def drivers_loaded(code: str) -> list[str]:
    """The database drivers imported by a fresh interpreter after running ``code``."""
    report = f"print(json.dumps(sorted(set({DRIVERS!r}) & set(sys.modules))))"
    probe = f"import sys, json\n{code}\n{report}"
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True,
                            text=True, check=True, timeout=60)  # fmt: skip
    loaded: list[str] = json.loads(result.stdout.strip().splitlines()[-1])
    return loaded


def test_an_idle_executor_imports_no_database_driver() -> None:
    assert drivers_loaded("import services.executor.service") == []


def test_first_use_of_an_engine_imports_its_driver_only() -> None:
    code = "from services.executor.adapters import adapter_for\nadapter_for('redis')"
    assert drivers_loaded(code) == ["redis"]


def test_an_executor_finds_its_pg_dumps_before_the_first_job() -> None:
    """Looked for once at start (a process per ``pg_dump --version``), in a thread,
    not on the event loop in the first backup; and without loading asyncpg."""
    code = (
        "import asyncio\n"
        "from services.executor.adapters.pg_tools import installed_pg_dumps\n"
        "from services.executor.context import prepare_for_jobs\n"
        "asyncio.run(prepare_for_jobs())\n"
        "assert installed_pg_dumps.cache_info().currsize == 1\n"
        "assert installed_pg_dumps(), 'no pg_dump found'"
    )
    assert drivers_loaded(code) == []
