"""Every service as a real process: ready with real NATS and a metadata DB, exits 0
on SIGTERM/SIGINT without a traceback, and follows its dependencies going away and
coming back."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from services.common.migrate import upgrade
from tests.processes import (
    SERVICES,
    ServiceProcess,
    assert_clean_exit,
    free_port,
    service_env,
    start,
    wait_for_status,
)
from tests.servers import NatsServer, PostgresServer

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("name", SERVICES)
def test_service_becomes_ready_and_exits_cleanly_on_sigterm(
    name: str,
    nats_server: NatsServer,
    migrated_url: str,
    tmp_path: Path,
    processes: list[ServiceProcess],
) -> None:
    env = service_env(tmp_path, nats_server.url, migrated_url)
    process = start(processes, name, env, tmp_path)
    wait_for_status(f"{process.base_url}/readyz", 200, timeout=30)
    wait_for_status(f"{process.base_url}/healthz", 200, timeout=1)
    wait_for_status(f"{process.base_url}/metrics", 200, timeout=1)
    assert_clean_exit(process, signal.SIGTERM)


def test_sigint_also_exits_cleanly(
    nats_server: NatsServer, migrated_url: str, tmp_path: Path, processes: list[ServiceProcess]
) -> None:
    process = start(
        processes, "executor", service_env(tmp_path, nats_server.url, migrated_url), tmp_path
    )
    wait_for_status(f"{process.base_url}/readyz", 200, timeout=30)
    assert_clean_exit(process, signal.SIGINT)


def test_readyz_follows_nats_and_the_service_reconnects(
    nats_server: NatsServer, migrated_url: str, tmp_path: Path, processes: list[ServiceProcess]
) -> None:
    process = start(
        processes, "scheduler", service_env(tmp_path, nats_server.url, migrated_url), tmp_path
    )
    readyz = f"{process.base_url}/readyz"
    wait_for_status(readyz, 200, timeout=30)
    nats_server.halt()
    wait_for_status(readyz, 503, timeout=15)
    wait_for_status(f"{process.base_url}/healthz", 200, timeout=1)  # alive, just not ready
    nats_server.resume()
    wait_for_status(readyz, 200, timeout=20)
    assert "NATS reconnected" in process.log()
    assert_clean_exit(process, signal.SIGTERM)


def test_readyz_follows_the_metadata_db_and_recovers(
    nats_server: NatsServer, tmp_path: Path, processes: list[ServiceProcess]
) -> None:
    with PostgresServer() as postgres:
        asyncio.run(upgrade(postgres.url("postgres")))
        env = service_env(tmp_path, nats_server.url, postgres.url("postgres"))
        process = start(processes, "storage", env, tmp_path)
        readyz = f"{process.base_url}/readyz"
        wait_for_status(readyz, 200, timeout=30)
        postgres.halt()
        wait_for_status(readyz, 503, timeout=15)
        postgres.resume()
        wait_for_status(readyz, 200, timeout=20)
        assert_clean_exit(process, signal.SIGTERM)


def test_starts_while_nats_is_down_and_waits_for_it(
    migrated_url: str, tmp_path: Path, processes: list[ServiceProcess]
) -> None:
    port = free_port()
    env = service_env(tmp_path, f"nats://127.0.0.1:{port}", migrated_url)
    process = start(processes, "api", env, tmp_path)
    wait_for_status(f"{process.base_url}/healthz", 200, timeout=30)
    assert wait_for_status(f"{process.base_url}/readyz", 503, timeout=1) >= 0
    nats = NatsServer()
    nats.port = port
    with nats:
        wait_for_status(f"{process.base_url}/readyz", 200, timeout=20)
    assert f"NATS at nats://127.0.0.1:{port} unavailable" in process.log()
    assert_clean_exit(process, signal.SIGTERM)


def test_sigterm_while_waiting_for_dependencies_exits_cleanly(
    migrated_url: str, tmp_path: Path, processes: list[ServiceProcess]
) -> None:
    env = service_env(tmp_path, f"nats://127.0.0.1:{free_port()}", migrated_url)
    process = start(processes, "executor", env, tmp_path)
    wait_for_status(f"{process.base_url}/healthz", 200, timeout=30)
    assert_clean_exit(process, signal.SIGTERM)


def test_production_without_secrets_refuses_to_start(
    nats_server: NatsServer, migrated_url: str, tmp_path: Path, processes: list[ServiceProcess]
) -> None:
    env = service_env(tmp_path, nats_server.url, migrated_url, BM_MODE="production")
    process = start(processes, "api", env, tmp_path)
    assert process.wait(timeout=30) == 2
    log = process.log()
    assert "BM_CREDENTIAL_KEYS" in log
    assert "Traceback" not in log
    assert not (tmp_path / "credential.keys").exists()
