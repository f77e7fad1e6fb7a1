"""Runs our own services as real processes for tests: environment, free ports, logs
captured to a file, HTTP probes and a clean stop."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO

SERVICES = ("api", "scheduler", "executor", "storage")
REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def service_env(data_dir: Path, nats_url: str, database_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BM_")}
    env.update(
        BM_DATA_DIR=str(data_dir),
        BM_NATS_URL=nats_url,
        BM_DATABASE_URL=database_url,
        BM_CONNECT_RETRY_MAX_S="0.5",
        BM_SHUTDOWN_GRACE_S="5",
        BM_API_WORKERS="1",  # one API process unless a test asks for more
        PYTHONUNBUFFERED="1",
    )
    for name in SERVICES:
        env[f"BM_{name.upper()}_PORT"] = str(free_port())
    env.update(extra)
    return env


def http_status(url: str, timeout: float = 2.0) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - our URL
            status: int = response.status
            return status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (OSError, TimeoutError):
        return None


def wait_for_status(url: str, want: int, timeout: float) -> float:
    """Poll ``url`` until it answers ``want``; return the seconds it took."""
    start = time.monotonic()
    last: int | None = None
    while time.monotonic() - start < timeout:
        last = http_status(url)
        if last == want:
            return time.monotonic() - start
        time.sleep(0.1)
    raise AssertionError(f"{url} answered {last}, not {want}, within {timeout}s")


class ServiceProcess:
    """``python -m services.<name>`` with its output in ``log_path``."""

    def __init__(self, name: str, env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.env = env
        self.log_path = log_path
        self.port = int(env[f"BM_{name.upper()}_PORT"]) if name in SERVICES else 0
        self._log: IO[bytes] | None = None
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, module: str | None = None) -> ServiceProcess:
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", module or f"services.{self.name}"],
            env=self.env,
            cwd=REPO,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def signal(self, signum: int = signal.SIGTERM) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def wait(self, timeout: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None


def start(
    processes: list[ServiceProcess], name: str, env: dict[str, str], tmp_path: Path
) -> ServiceProcess:
    """Start service ``name``, logging to ``tmp_path``; stopped after the test."""
    process = ServiceProcess(name, env, tmp_path / f"{name}.log").start()
    processes.append(process)
    return process


def assert_clean_exit(process: ServiceProcess, signum: int) -> None:
    process.signal(signum)
    assert process.wait(timeout=15) == 0, process.log()
    log = process.log()
    assert "Traceback" not in log, log
    assert f"{process.name} stopped" in log
