"""The one command that runs everything: embedded NATS, migrated SQLite, first admin,
four services ready, clean stop on Ctrl-C."""

from __future__ import annotations

import re
import signal
import sqlite3
import time
from pathlib import Path

import pytest

from tests.processes import SERVICES, ServiceProcess, free_port, service_env, wait_for_status

pytestmark = pytest.mark.integration
READY_BANNER = "BackupManager is running"


def wait_for_text(process: ServiceProcess, text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in process.log():
            return
        assert process.process is not None
        if process.process.poll() is not None:
            break
        time.sleep(0.2)
    raise AssertionError(f"{text!r} not printed within {timeout}s:\n{process.log()}")


def launch(env: dict[str, str], log: Path) -> ServiceProcess:
    return ServiceProcess("launcher", env, log).start("services.launcher")


def test_launcher_runs_everything_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    env = service_env(data_dir, f"nats://127.0.0.1:{free_port()}", "")
    del env["BM_DATABASE_URL"]  # the embedded default: a SQLite file in the data dir
    env["BM_ADMIN_EMAIL"] = "Owner@Example.com"

    launcher = launch(env, tmp_path / "launcher.log")
    try:
        wait_for_text(launcher, READY_BANNER, timeout=30)
        for name in SERVICES:
            wait_for_status(f"http://127.0.0.1:{env[f'BM_{name.upper()}_PORT']}/readyz", 200, 1)
        output = launcher.log()
        match = re.search(r"One-time password: (\S+)", output)
        assert match is not None, output
        assert (data_dir / "logs" / "nats.log").exists()

        with sqlite3.connect(data_dir / "metadata.db") as db:
            rows = db.execute("SELECT email, is_admin, password_hash FROM users").fetchall()
        assert [(email, admin) for email, admin, _ in rows] == [("owner@example.com", 1)]
        assert match.group(1) not in rows[0][2]  # only the bcrypt hash is stored

        launcher.signal(signal.SIGINT)
        assert launcher.wait(timeout=30) == 0
    finally:
        launcher.stop()
    output = launcher.log()
    assert "Traceback" not in output, output
    for name in SERVICES:
        assert f"{name} stopped" in output

    again = launch(env, tmp_path / "launcher-again.log")
    try:
        wait_for_text(again, READY_BANNER, timeout=30)
        again.signal(signal.SIGTERM)
        assert again.wait(timeout=30) == 0
    finally:
        again.stop()
    assert "First admin" not in again.log()  # created once, never again
