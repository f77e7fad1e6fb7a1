"""Recent checks of who a bearer token stands for (see ``principal``): kept for
``BM_API_AUTH_CACHE_S`` seconds on the injectable clock, forgotten at once after any
change this process makes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from services.api.auth.principal import Principal


@dataclass(frozen=True)
class _Checked:
    principal: Principal
    until: datetime
    expires_at: datetime | None = None
    """The token's own expiry."""


class PrincipalCache:
    """Recent checks of access tokens (by the token) and API tokens (by hash)."""

    MAX_ENTRIES = 10_000

    def __init__(self, ttl_s: float) -> None:
        self.ttl = timedelta(seconds=ttl_s)
        self._checked: dict[object, _Checked] = {}
        self.generation = 0
        """Moves on at every ``clear()``: a check that began before a change (read
        it first, pass it to ``put``) is not remembered after it."""

    def get(self, key: object, now: datetime) -> Principal | None:
        found = self._checked.get(key)
        if found is None or found.until <= now:
            return None
        if found.expires_at is not None and found.expires_at <= now:
            return None
        return found.principal

    def put(
        self,
        key: object,
        principal: Principal,
        now: datetime,
        expires_at: datetime | None,
        generation: int,
    ) -> None:
        if self.ttl <= timedelta(0) or generation != self.generation:
            return
        if len(self._checked) >= self.MAX_ENTRIES:
            self._checked.clear()
        self._checked[key] = _Checked(principal, now + self.ttl, expires_at)

    def clear(self) -> None:
        self._checked.clear()
        self.generation += 1
