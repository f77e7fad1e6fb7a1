#!/usr/local/bin/python
"""Container health check, installed in the image as ``bm-healthcheck``.

    bm-healthcheck [PATH] [--service NAME]      PATH defaults to /healthz

One image runs four services, so the check finds out which one this container runs
from PID 1's command line (``tini -- python -m services.<name>``) unless ``--service``
says it, asks that service's port (``BM_<NAME>_PORT`` or its default, from the same
settings the service reads) and exits 0 on HTTP 200, 1 otherwise. A container that
runs something else (``python -m services.manage migrate``) has nothing to ask: 0.
No curl in the image: Python's standard library does the request.
"""

from __future__ import annotations

import argparse
import re
import sys
import urllib.error
import urllib.request
from pathlib import Path

from services.common.settings import Settings

SERVICES = ("api", "scheduler", "executor", "storage")
TIMEOUT_S = 4.0
_MODULE = re.compile(r"(?:^|\x00)-m\x00services\.([a-z_]+)(?:\.__main__)?(?:\x00|$)")
_ANY_ADDRESS = {"", "0.0.0.0", "::"}  # noqa: S104 - listening everywhere means ask loopback


def service_of(cmdline: bytes) -> str | None:
    """The service a NUL-separated command line runs, or None when it runs none."""
    match = _MODULE.search(cmdline.decode(errors="replace"))
    if match is None or match.group(1) not in SERVICES:
        return None
    return match.group(1)


def url_for(service: str, settings: Settings, path: str) -> str:
    host = settings.http_host
    if host in _ANY_ADDRESS:
        host = "127.0.0.1"
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.port_of(service)}{path}"


def check(url: str) -> str | None:
    """None when ``url`` answers 200, else what went wrong."""
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:  # noqa: S310 - http on loopback
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        exc.close()
        return f"{url} answered {exc.code}"
    except (OSError, ValueError) as exc:
        return f"{url} unreachable: {exc}"
    return None if status == 200 else f"{url} answered {status}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bm-healthcheck", description=__doc__)
    parser.add_argument("path", nargs="?", default="/healthz", choices=["/healthz", "/readyz"])
    parser.add_argument("--service", choices=SERVICES)
    args = parser.parse_args(argv)
    service: str | None = args.service
    if service is None:
        try:
            service = service_of(Path("/proc/1/cmdline").read_bytes())
        except OSError:
            service = None
        if service is None:
            return 0
    problem = check(url_for(service, Settings(), args.path))
    if problem is not None:
        print(problem, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
