"""Which backups a retention policy keeps, and why: a pure function of the policy,
the schedule's time zone, "now" and the backups. The storage service applies it
(after every completed backup and on its periodic sweep) and the API previews it,
so both always agree. Nothing here reads the clock, the metadata DB or storage.

Rules, for the backups of one schedule (see ``docs/storage.md``):

* Queued and running rows are never touched.
* Retention applies **per destination**: for each destination, the selection below
  runs over the good backups stored *there*, and decides for each of those copies.
  A destination that missed a copy (it failed that night) therefore keeps older
  ones instead, so every destination holds what the policy says. A backup's row
  goes when every stored copy goes. Candidates that name no destination count as
  stored on one (the backup's copies as one group).
* Good backups (succeeded, with a stored copy on that destination) are kept when
  *any* part of the policy keeps them: ``keep_last`` N newest; younger than
  ``max_age_days``; or, per GFS tier, the newest backup of each of the N most recent
  hours / days / ISO weeks / months / years *that have a good backup*, bucketed on
  the wall clock of the schedule's time zone (an hour bucket also carries its UTC
  offset, so the two 02:00 hours of a fall-back night are two buckets). A policy
  with no part at all keeps everything.
* Whatever the policy says, the newest good backup and the newest verified one are
  kept, on every destination (the newest stored there).
* Failed, cancelled, missed and skipped rows (no artifact) are kept for history
  for ``failed_run_retention_days`` after they ended, then deleted. So are backups
  that are no longer usable (corrupt, or every copy missing), counted from when
  they were found so.
"""

from __future__ import annotations

import uuid
import zoneinfo
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any, Final

from pydantic import ValidationError

from services.common.db.enums import BackupStatus
from services.common.retention_policy import GfsCounts, RetentionPolicy

UNFINISHED: Final = frozenset({BackupStatus.QUEUED, BackupStatus.RUNNING})
HISTORY_ONLY: Final = frozenset(
    {BackupStatus.FAILED, BackupStatus.CANCELLED, BackupStatus.MISSED, BackupStatus.SKIPPED}
)
DEFAULT_FAILED_RUN_RETENTION_DAYS: Final = 30

NEWEST_GOOD = "newest successful backup"
NEWEST_VERIFIED = "newest verified backup"
KEEP_ALL = "no retention rule: everything is kept"
STILL_RUNNING = "not finished yet"


@dataclass(frozen=True)
class Candidate:
    """What the selection needs to know about one backup row."""

    id: uuid.UUID
    status: BackupStatus
    finished_at: datetime
    """When the run ended (for rows that never ran: when they were recorded); aware."""
    verified: bool = False
    """A verification restore of it passed."""
    usable: bool = True
    """At least one copy is stored (False: every copy is missing or corrupt); only
    read when ``stored_on`` is empty."""
    broken_at: datetime | None = None
    """When it was found unusable (the history window of unusable backups starts then)."""
    stored_on: frozenset[uuid.UUID] = frozenset()
    """The destinations holding a stored copy; empty: not told (then a usable backup's
    copies are one group, decided together)."""


@dataclass(frozen=True)
class CopyDecision:
    """Keep or delete one backup's stored copy on one destination."""

    destination_id: uuid.UUID | None
    """``None``: the backup's copies as one group (its candidate named no destination)."""
    keep: bool
    reasons: tuple[str, ...]
    """Every rule that keeps it there, or every reason it goes (never empty)."""


@dataclass(frozen=True)
class BackupPlan:
    """What retention does to one backup row and each of its stored copies."""

    backup_id: uuid.UUID
    keep: bool
    """The row stays: a stored copy stays, or the row is kept (history, still running)."""
    reasons: tuple[str, ...]
    """Why the row stays (what keeps its kept copies) or goes (never empty)."""
    copies: tuple[CopyDecision, ...] = ()
    """One per stored copy, by destination id; the rest of a kept row's copies stay."""

    @property
    def dropped(self) -> tuple[CopyDecision, ...]:
        """The stored copies that go."""
        return tuple(copy for copy in self.copies if not copy.keep)


@dataclass
class _Votes:
    keep: list[str] = field(default_factory=list)
    drop: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Effective:
    """The policy and zone a schedule's stored values mean."""

    policy: RetentionPolicy
    zone: tzinfo
    problem: str | None = None
    """Why everything is kept instead (a stored value no longer validates)."""


def effective(stored: Mapping[str, Any] | None, timezone: str | None) -> Effective:
    """A schedule's stored ``retention`` and ``timezone`` as what they mean; no
    schedule (``None``, ``None``), or values that no longer validate, keep everything:
    deleting on a guess is the one thing retention must not do."""
    if stored is None and timezone is None:
        return Effective(RetentionPolicy(), UTC)
    try:
        policy = RetentionPolicy.from_stored(dict(stored or {}))
    except ValidationError:
        return Effective(RetentionPolicy(), UTC, "the stored retention policy is invalid")
    try:
        return Effective(policy, zone(timezone or "UTC"))
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return Effective(RetentionPolicy(), UTC, f"unknown time zone {timezone!r}")


def zone(name: str | tzinfo) -> tzinfo:
    if isinstance(name, tzinfo):
        return name
    return zoneinfo.ZoneInfo(name)


def decide(
    policy: RetentionPolicy,
    tz: str | tzinfo,
    now: datetime,
    backups: Iterable[Candidate],
    *,
    failed_run_retention_days: int = DEFAULT_FAILED_RUN_RETENTION_DAYS,
) -> list[BackupPlan]:
    """For each backup, keep or delete its row and each stored copy, and why; newest
    first."""
    ordered = sorted(backups, key=lambda b: (b.finished_at, b.id), reverse=True)
    history = timedelta(days=failed_run_retention_days)
    local = zone(tz)
    rows = {b.id: _Votes() for b in ordered}
    groups: dict[uuid.UUID | None, list[Candidate]] = {}
    for backup in ordered:
        if backup.status in UNFINISHED:
            rows[backup.id].keep.append(STILL_RUNNING)
        elif _is_good(backup):
            for destination in _stored(backup):
                groups.setdefault(destination, []).append(backup)
        else:
            _vote_history(backup, rows[backup.id], now, history, failed_run_retention_days)
    copies = {
        (backup_id, destination): votes
        for destination, good in groups.items()
        for backup_id, votes in _select(policy, local, now, good).items()
    }
    return [_plan(b, rows[b.id], copies) for b in ordered]


def _stored(backup: Candidate) -> tuple[uuid.UUID | None, ...]:
    if backup.stored_on:
        return tuple(sorted(backup.stored_on))
    return (None,) if backup.usable else ()


def _is_good(backup: Candidate) -> bool:
    return backup.status is BackupStatus.SUCCEEDED and bool(_stored(backup))


def _select(
    policy: RetentionPolicy, tz: tzinfo, now: datetime, good: list[Candidate]
) -> dict[uuid.UUID, _Votes]:
    """The policy over the good backups of one destination (newest first)."""
    votes = {b.id: _Votes() for b in good}
    _vote_policy(policy, tz, now, good, votes)
    if good:
        votes[good[0].id].keep.append(NEWEST_GOOD)
    verified = [b for b in good if b.verified]
    if verified:
        votes[verified[0].id].keep.append(NEWEST_VERIFIED)
    return votes


def _plan(
    backup: Candidate,
    row: _Votes,
    copies: dict[tuple[uuid.UUID, uuid.UUID | None], _Votes],
) -> BackupPlan:
    if not _is_good(backup):  # still running, or the history rule: all together
        keep, reasons = _verdict(row)
        together = tuple(CopyDecision(d, keep, reasons) for d in sorted(backup.stored_on))
        return BackupPlan(backup.id, keep, reasons, together)
    decided = tuple(CopyDecision(d, *_verdict(copies[backup.id, d])) for d in _stored(backup))
    keep = any(copy.keep for copy in decided)
    why = dict.fromkeys(r for copy in decided if copy.keep is keep for r in copy.reasons)
    return BackupPlan(backup.id, keep, tuple(why), decided)


def _verdict(votes: _Votes) -> tuple[bool, tuple[str, ...]]:
    return (True, tuple(votes.keep)) if votes.keep else (False, tuple(votes.drop))


def _vote_history(
    backup: Candidate, votes: _Votes, now: datetime, history: timedelta, days: int
) -> None:
    if backup.status in HISTORY_ONLY:
        what, since = f"{backup.status.value} run", backup.finished_at
    else:
        what = "corrupt" if backup.status is BackupStatus.CORRUPT else "no stored copy left"
        since = max(backup.finished_at, backup.broken_at or backup.finished_at)
    if now - since < history:
        votes.keep.append(f"{what}: kept {_days(days)} for history")
    else:
        votes.drop.append(f"{what} for more than {_days(days)}")


def _vote_policy(
    policy: RetentionPolicy,
    tz: tzinfo,
    now: datetime,
    good: list[Candidate],
    votes: dict[uuid.UUID, _Votes],
) -> None:
    if policy.keeps_everything:
        for backup in good:
            votes[backup.id].keep.append(KEEP_ALL)
        return
    if policy.keep_last is not None:
        rule = f"keep_last {policy.keep_last}"
        for index, backup in enumerate(good):
            if index < policy.keep_last:
                votes[backup.id].keep.append(rule)
            else:
                votes[backup.id].drop.append(f"not among the newest {policy.keep_last} (keep_last)")
    if policy.max_age_days is not None:
        limit = timedelta(days=policy.max_age_days)
        for backup in good:
            if now - backup.finished_at < limit:
                votes[backup.id].keep.append(f"max_age {_days(policy.max_age_days)}")
            else:
                votes[backup.id].drop.append(f"max_age {_days(policy.max_age_days)} exceeded")
    if policy.gfs is not None and any(policy.gfs.model_dump().values()):
        _vote_gfs(policy.gfs, tz, good, votes)


BucketOf = Callable[[datetime], str]


def _hour(local: datetime) -> str:
    # The offset tells apart the two wall-clock hours of a fall-back night.
    return local.strftime("%Y-%m-%d %H:00") + _offset(local)


def _offset(local: datetime) -> str:
    offset = local.utcoffset() or timedelta(0)
    sign = "-" if offset < timedelta(0) else "+"
    minutes = abs(int(offset.total_seconds())) // 60
    return f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def _week(local: datetime) -> str:
    year, week, _ = local.isocalendar()
    return f"{year}-W{week:02d}"


TIERS: Final[tuple[tuple[str, BucketOf], ...]] = (
    ("hourly", _hour),
    ("daily", lambda local: local.strftime("%Y-%m-%d")),
    ("weekly", _week),
    ("monthly", lambda local: local.strftime("%Y-%m")),
    ("yearly", lambda local: local.strftime("%Y")),
)


def bucket(tier: str, at: datetime, tz: str | tzinfo) -> str:
    """The GFS bucket (label) of an instant in a time zone, e.g. ``2026-W48``."""
    return dict(TIERS)[tier](at.astimezone(zone(tz)))


def _vote_gfs(
    gfs: GfsCounts, tz: tzinfo, good: list[Candidate], votes: dict[uuid.UUID, _Votes]
) -> None:
    kept_by_gfs: set[uuid.UUID] = set()
    for tier, bucket_of in TIERS:
        count = getattr(gfs, tier) or 0
        if count <= 0:
            continue
        seen: set[str] = set()
        for backup in good:  # newest first: the first one met in a bucket is its newest
            label = bucket_of(backup.finished_at.astimezone(tz))
            if label in seen:
                continue
            if len(seen) == count:
                break
            seen.add(label)
            votes[backup.id].keep.append(f"gfs {tier} {label}")
            kept_by_gfs.add(backup.id)
    for backup in good:
        if backup.id not in kept_by_gfs:
            votes[backup.id].drop.append("not the newest of a kept GFS period")


def _days(days: int) -> str:
    return f"{days} day" if days == 1 else f"{days} days"
