"""The schedule form: the cron builder's presets, the choices it offers, and the
conversion between the form's fields and the API's schedule models."""

from __future__ import annotations

import functools
import uuid
import zoneinfo
from datetime import datetime
from typing import Any

from services.api.pages.forms import Form
from services.common.cron import CronError, Slot, describe, next_slots, parse_cron
from services.common.db.enums import Compression, OverlapPolicy, VerifyMode
from services.common.db.models import Schedule

CUSTOM = "custom"
PRESETS: tuple[tuple[str, str], ...] = (
    ("0 * * * *", "Every hour, on the hour"),
    ("0 */6 * * *", "Every 6 hours"),
    ("0 2 * * *", "Every day at 02:00"),
    ("30 1 * * 1-5", "Weekdays at 01:30"),
    ("0 3 * * 0", "Every Sunday at 03:00"),
    ("0 4 1 * *", "On the 1st of every month at 04:00"),
)
PRESET_CHOICES = [*PRESETS, (CUSTOM, "Custom expression…")]
COMPRESSIONS = [("zstd", "zstd (fast, small)"), ("gzip", "gzip"), ("none", "none")]
OVERLAPS = [("skip", "Skip the new run"), ("queue", "Queue it until the running one ends")]
VERIFICATIONS = [
    ("off", "Off"),
    ("every_run", "After every run"),
    ("daily", "Daily"),
    ("weekly", "Weekly"),
]
GFS_TIERS = ("hourly", "daily", "weekly", "monthly", "yearly")
PREVIEW_RUNS = 5


@functools.lru_cache(maxsize=1)
def time_zones() -> tuple[str, ...]:
    return tuple(sorted(zoneinfo.available_timezones()))


def preset_of(cron: str) -> str:
    """The preset an expression is (in normal form), else ``custom``."""
    try:
        fields = parse_cron(cron).five_fields
    except CronError:
        return CUSTOM
    return next((expr for expr, _ in PRESETS if parse_cron(expr).five_fields == fields), CUSTOM)


def chosen_cron(form: Form) -> str:
    preset = form.raw("preset")
    if preset and preset != CUSTOM:
        return preset
    return form.raw("cron").strip()


def _retention(form: Form) -> dict[str, Any]:
    gfs = {tier: form.optional(f"retention.gfs.{tier}") for tier in GFS_TIERS}
    return {
        "keep_last": form.optional("retention.keep_last"),
        "max_age_days": form.optional("retention.max_age_days"),
        "gfs": gfs if any(v is not None for v in gfs.values()) else None,
    }


def schedule_fields(form: Form) -> dict[str, Any]:
    """The body of ScheduleCreate / ScheduleUpdate (less the database) from the form."""
    fields: dict[str, Any] = {
        "name": form.raw("name"),
        "cron": chosen_cron(form),
        "timezone": form.optional("timezone") or "UTC",
        "enabled": form.checked("enabled"),
        "compression": form.raw("compression") or Compression.ZSTD.value,
        "compression_level": form.optional("compression_level"),
        "overlap_policy": form.raw("overlap_policy") or OverlapPolicy.SKIP.value,
        "verify": form.raw("verify") or VerifyMode.OFF.value,
        "retention": _retention(form),
    }
    timeout = form.optional("timeout_min")
    if timeout is not None:
        try:
            fields["timeout_s"] = round(float(timeout) * 60)
        except ValueError:
            fields["timeout_s"] = timeout  # the model says what is wrong
    destinations = [d for d in form.values("destination_ids") if d]
    fields["destination_ids"] = destinations or None
    return fields


RENAMES = {"timeout_s": "timeout_min", "destination_ids.0": "destination_ids"}


def form_of(schedule: Schedule, destination_ids: list[uuid.UUID]) -> Form:
    """A form filled with a stored schedule."""
    data: dict[str, str] = {
        "name": schedule.name,
        "preset": preset_of(schedule.cron),
        "cron": schedule.cron,
        "timezone": schedule.timezone,
        "compression": schedule.compression.value,
        "compression_level": ""
        if schedule.compression_level is None
        else str(schedule.compression_level),
        "timeout_min": f"{schedule.timeout_s / 60:g}",
        "overlap_policy": schedule.overlap_policy.value,
        "verify": schedule.verify.value,
    }
    if schedule.enabled:
        data["enabled"] = "on"
    retention = schedule.retention or {}
    for key in ("keep_last", "max_age_days"):
        if retention.get(key) is not None:
            data[f"retention.{key}"] = str(retention[key])
    for tier, count in (retention.get("gfs") or {}).items():
        if count is not None:
            data[f"retention.gfs.{tier}"] = str(count)
    form = Form(data)
    for destination_id in destination_ids:
        form.data.add("destination_ids", str(destination_id))
    return form


def new_form(database_id: uuid.UUID | None) -> Form:
    return Form(
        {
            "database_id": str(database_id or ""),
            "name": "nightly",
            "preset": "0 2 * * *",
            "cron": "0 2 * * *",
            "timezone": "UTC",
            "enabled": "on",
            "compression": "zstd",
            "timeout_min": "360",
            "overlap_policy": "skip",
            "verify": "off",
            "retention.keep_last": "7",
        }
    )


def preview(cron: str, tz: str, now: datetime) -> tuple[str, list[Slot]]:
    """The cron in words and its next runs; raises CronError saying what is wrong."""
    return describe(cron), next_slots(cron, tz, now, PREVIEW_RUNS)
