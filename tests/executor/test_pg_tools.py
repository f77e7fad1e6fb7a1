"""Which pg_dump a backup runs: the newest installed one whose major version is at
least the server's; when none is, an error naming both versions."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from services.executor.adapters import pg_tools
from services.executor.adapters.base import DatabaseError


def stand_in(root: Path, major: int, minor: int) -> Path:
    """``<root>/<major>/bin/pg_dump`` that prints its version as pg_dump does."""
    bindir = root / str(major) / "bin"
    bindir.mkdir(parents=True)
    tool = bindir / "pg_dump"
    tool.write_text(f"#!/bin/sh\necho 'pg_dump (PostgreSQL) {major}.{minor}'\n")
    tool.chmod(0o755)
    return tool


@pytest.fixture
def installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[int, Path]]:
    """pg_dump 13, 15 and 17 installed, nothing on PATH."""
    tools = {major: stand_in(tmp_path, major, 4) for major in (13, 15, 17)}
    monkeypatch.setattr(pg_tools, "PG_BIN_GLOB", str(tmp_path / "*" / "bin"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    pg_tools.installed_pg_dumps.cache_clear()
    yield tools
    pg_tools.installed_pg_dumps.cache_clear()


def test_every_installed_pg_dump_found_newest_first(installed: dict[int, Path]) -> None:
    found = pg_tools.installed_pg_dumps()
    assert [(major, path) for major, path, _ in found] == [
        (17, str(installed[17])), (15, str(installed[15])), (13, str(installed[13]))
    ]  # fmt: skip
    assert found[0][2] == "pg_dump (PostgreSQL) 17.4"


@pytest.mark.parametrize("server", ["13.9", "15.2", "16.1 (Debian 16.1-1)", "17.0"])
def test_the_newest_pg_dump_serves_every_older_or_equal_server(
    installed: dict[int, Path], server: str
) -> None:
    assert pg_tools.choose_pg_dump(server) == (str(installed[17]), "pg_dump (PostgreSQL) 17.4")


def test_a_newer_server_than_any_pg_dump_names_both_versions(installed: dict[int, Path]) -> None:
    with pytest.raises(DatabaseError) as info:
        pg_tools.choose_pg_dump("18.1")
    assert info.value.code == "tool_version_mismatch"
    message = str(info.value)
    assert "PostgreSQL server 18.1" in message
    assert "version 18 or newer" in message
    assert f"17 ({installed[17]})" in message


def test_no_pg_dump_at_all(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pg_tools, "PG_BIN_GLOB", str(tmp_path / "*" / "bin"))
    monkeypatch.setenv("PATH", str(tmp_path))
    pg_tools.installed_pg_dumps.cache_clear()
    try:
        with pytest.raises(DatabaseError, match="installed: none"):
            pg_tools.choose_pg_dump("15.2")
    finally:
        pg_tools.installed_pg_dumps.cache_clear()
