"""Several API processes on one port (``BM_API_WORKERS``): the kernel spreads
connections over them, worker 0 restarts a copy that dies and stops them all, and a
change made through one is not answered from another's cache."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from services.api.auth.tokens import issue_access_token
from services.common.db.engine import create_engine, session_factory
from services.common.db.models import User
from services.common.passwords import hash_password
from services.common.secrets import resolve_secrets
from services.common.settings import Settings
from tests.processes import ServiceProcess, assert_clean_exit, service_env, start, wait_for_status
from tests.servers import NatsServer

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Answer:
    worker: int
    status: int
    body: Any


def ask(url: str, token: str | None = None, method: str = "GET", body: Any = None) -> Answer:
    """One request on a fresh connection, so the kernel picks a worker each time."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - our URL
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
            worker, status, raw = response.headers["X-Worker"], response.status, response.read()
    except urllib.error.HTTPError as exc:
        worker, status, raw = exc.headers["X-Worker"], exc.code, exc.read()
    return Answer(int(worker), status, json.loads(raw) if raw else None)


def from_every_worker(
    send: Callable[[], Answer], workers: int, *, within_s: float = 30
) -> dict[int, list[Answer]]:
    """Ask until every worker answered at least twice (a worker that is still
    starting has not bound the port yet); the answers by worker."""
    answers: dict[int, list[Answer]] = {}
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        answer = send()
        answers.setdefault(answer.worker, []).append(answer)
        if len(answers) == workers and all(len(a) >= 2 for a in answers.values()):
            return answers
        time.sleep(0.01)
    raise AssertionError(f"not every worker answered within {within_s}s: {sorted(answers)}")


async def add_users(database_url: str) -> tuple[User, User]:
    engine = create_engine(database_url)
    try:
        async with session_factory(engine)() as session, session.begin():
            admin = User(email="root@example.com", is_admin=True,
                         password_hash=hash_password("admin password", rounds=4))  # fmt: skip
            user = User(email="someone@example.com",
                        password_hash=hash_password("user password", rounds=4))  # fmt: skip
            session.add_all([admin, user])
        return admin, user
    finally:
        await engine.dispose()


def test_workers_share_the_port_hear_of_changes_restart_and_stop_together(
    nats_server: NatsServer, migrated_url: str, tmp_path: Path, processes: list[ServiceProcess]
) -> None:
    # Token checks remembered for a minute: only the change notice can make the other
    # worker forget a disabled account's token in time.
    env = service_env(tmp_path, nats_server.url, migrated_url,
                      BM_API_WORKERS="2", BM_API_AUTH_CACHE_S="60")  # fmt: skip
    admin, user = asyncio.run(add_users(migrated_url))
    secret = resolve_secrets(Settings(data_dir=tmp_path, database_url=migrated_url)).jwt_secret
    now = datetime.now(UTC)
    admin_token, user_token = (issue_access_token(u.id, secret=secret, now=now, ttl_s=600)
                               for u in (admin, user))  # fmt: skip
    process = start(processes, "api", env, tmp_path)
    base = process.base_url
    wait_for_status(f"{base}/readyz", 200, timeout=30)

    # Both answer on the one port (and both become ready).
    ready = from_every_worker(lambda: ask(f"{base}/readyz"), 2)
    assert {a.status for answers in ready.values() for a in answers} == {200}

    # The user's token is checked, and remembered, by both workers ...
    me = from_every_worker(lambda: ask(f"{base}/api/v1/auth/me", user_token), 2)
    assert {a.status for answers in me.values() for a in answers} == {200}
    # ... an administrator disables the account through one of them ...
    disabled = ask(f"{base}/api/v1/users/{user.id}", admin_token, "PATCH", {"is_active": False})
    assert disabled.status == 200, disabled.body
    # ... and neither answers from what it remembered.
    after = from_every_worker(lambda: ask(f"{base}/api/v1/auth/me", user_token), 2)
    assert {a.status for answers in after.values() for a in answers} == {401}

    # A copy that dies is started again (a new process answers as worker 1).
    pids = {w: answers[0].body["pid"] for w, answers in
            from_every_worker(lambda: ask(f"{base}/healthz"), 2).items()}  # fmt: skip
    os.kill(pids[1], signal.SIGKILL)
    deadline = time.monotonic() + 30
    while True:
        try:
            answer = ask(f"{base}/healthz")
        except OSError:  # refused: no worker had this connection's turn yet
            answer = None
        if answer is not None and answer.worker == 1 and answer.body["pid"] != pids[1]:
            break
        assert time.monotonic() < deadline, "worker 1 was not restarted"
        time.sleep(0.1)
    assert "api worker 1 exited with code -9; restarting it" in process.log()

    # SIGTERM to worker 0 stops every worker, cleanly.
    restarted = answer.body["pid"]
    assert_clean_exit(process, signal.SIGTERM)
    assert not _alive(restarted)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
