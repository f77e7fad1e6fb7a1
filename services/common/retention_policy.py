"""A schedule's retention policy: which of its backups to keep. Validated by the API,
stored as JSON in ``schedules.retention``, and read back by the storage service
(:meth:`RetentionPolicy.from_stored`), which applies it.

Every part is optional and they combine: a backup is kept when *any* part keeps it
(``keep_last`` newest, younger than ``max_age_days``, or selected by a GFS tier).
An empty policy keeps everything. ``max_age_days`` alone lets every backup expire,
so the storage service should still keep the newest good one — that is its rule to
state, not this model's.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

MAX_COUNT = 100_000
MAX_AGE_DAYS = 36_500

Count = Annotated[int, Field(ge=0, le=MAX_COUNT)]


class GfsCounts(BaseModel):
    """Grandfather-father-son: keep the newest backup of each of the last N hours,
    days, weeks, months and years (0 or null: that tier keeps nothing)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    hourly: Count | None = None
    daily: Count | None = None
    weekly: Count | None = None
    monthly: Count | None = None
    yearly: Count | None = None


class RetentionPolicy(BaseModel):
    """Which backups of a schedule to keep; null or missing parts do not apply."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    keep_last: Annotated[int, Field(ge=1, le=MAX_COUNT)] | None = Field(
        default=None, description="Keep the newest N backups"
    )
    max_age_days: Annotated[int, Field(ge=1, le=MAX_AGE_DAYS)] | None = Field(
        default=None, description="Keep backups younger than N days"
    )
    gfs: GfsCounts | None = Field(
        default=None, description="Keep the newest backup per hour/day/week/month/year"
    )

    @property
    def keeps_everything(self) -> bool:
        tiers = self.gfs.model_dump().values() if self.gfs else ()
        return self.keep_last is None and self.max_age_days is None and not any(tiers)

    def to_stored(self) -> dict[str, Any]:
        """The JSON object for ``schedules.retention`` (null parts left out)."""
        return self.model_dump(exclude_none=True)

    @classmethod
    def from_stored(cls, stored: dict[str, Any] | None) -> RetentionPolicy:
        """The policy of a ``schedules.retention`` value (``{}`` or None: keep all)."""
        return cls.model_validate(stored or {})
