"""``python -m services.launcher``: the whole system on one machine, with embedded
defaults (SQLite file, local storage dir, an embedded nats-server)."""

from __future__ import annotations

import asyncio
import logging
import signal

from services.common.errors import BackupManagerError
from services.common.logs import configure_logging
from services.common.migrate import upgrade
from services.common.secrets import resolve_secrets
from services.common.settings import Settings
from services.launcher.nats_server import EmbeddedNats, host_port, is_listening
from services.launcher.supervisor import Supervisor
from services.manage.admin import ensure_first_admin

log = logging.getLogger("launcher")
READY_TIMEOUT_S = 60.0


async def launch(settings: Settings) -> int:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    settings.backups_dir.mkdir(parents=True, exist_ok=True)
    resolve_secrets(settings)  # generates development keys once, before four processes race

    nats: EmbeddedNats | None = None
    if not await is_listening(*host_port(settings.nats_url)):
        nats = EmbeddedNats(
            settings.nats_url, settings.data_dir / "nats", settings.data_dir / "logs" / "nats.log"
        )
        await nats.start()
    else:
        log.info("using the NATS server already listening at %s", settings.nats_url)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)

    supervisor = Supervisor(
        {name: settings.port_of(name) for name in ("api", "scheduler", "executor", "storage")},
        settings.shutdown_grace_s,
    )
    try:
        await upgrade(settings.database_url)
        log.info("metadata DB migrated: %s", _safe_url(settings.database_url))
        created = await ensure_first_admin(settings)
        if created is not None:
            email, password = created
            if password is None:
                print(f"\n  First admin created: {email} (password from BM_ADMIN_PASSWORD)\n")
            else:
                print(
                    f"\n  First admin created: {email}\n  One-time password: {password}\n"
                    "  (shown once; change it after logging in)\n",
                    flush=True,
                )
        await supervisor.start()
        not_ready = await supervisor.wait_ready(READY_TIMEOUT_S)
        if not_ready:
            log.error("not ready after %.0fs: %s", READY_TIMEOUT_S, ", ".join(not_ready))
        else:
            print(
                f"\n  BackupManager is running: {settings.public_url}\n  Ctrl-C stops it.\n",
                flush=True,
            )
        await stop.wait()
        log.info("stopping")
    finally:
        await supervisor.stop()
        if nats is not None:
            await nats.stop()
    return 0


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def main() -> None:
    settings = Settings()
    configure_logging("launcher", settings.log_level, settings.log_format)
    try:
        raise SystemExit(asyncio.run(launch(settings)))
    except BackupManagerError as exc:
        log.error("cannot start: %s", exc)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
