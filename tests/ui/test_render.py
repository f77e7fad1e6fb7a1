"""Pure parts of the pages: SVG charts, the filters templates use, and where a form
may send the browser next (never another site)."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta

import pytest

from services.api.pages.charts import Series, area, nice_step, stacked_bars
from services.api.pages.common import safe_next
from services.api.pages.render import ago, human_bytes, human_duration, percent
from services.api.pages.schedule_form import CUSTOM, preset_of

DAYS = [date(2026, 3, 1) + timedelta(days=i) for i in range(14)]


@pytest.mark.parametrize(
    ("span", "step"),
    [(0, 1), (3, 1), (4, 1), (7, 2), (10, 5), (37, 10), (180, 50), (0.9, 0.5), (1234, 500)],
)
def test_nice_step(span: float, step: float) -> None:
    assert nice_step(span) == step


def test_stacked_bars_are_svg_with_a_title_per_day() -> None:
    ok = Series("succeeded", "#16a34a", [i % 3 for i in range(14)])
    bad = Series("<failed>", "#dc2626", [1 if i == 5 else 0 for i in range(14)])
    svg = str(stacked_bars("Backups & more", DAYS, [ok, bad]))
    assert svg.startswith("<svg")
    assert svg.endswith("</svg>")
    assert 'role="img"' in svg
    assert "<title>Backups &amp; more</title>" in svg
    assert "&lt;failed&gt;" in svg
    assert "<failed>" not in svg
    assert "2026-03-06: 2 succeeded, 1 &lt;failed&gt;" in svg
    assert "2026-03-01: no backups" in svg
    assert len(re.findall(r'fill="#dc2626"', svg)) == 1
    assert ">Mar 14<" in svg  # the last day is always labelled


def test_empty_and_flat_charts_still_draw() -> None:
    assert "no backups" in str(stacked_bars("x", DAYS, [Series("a", "#000", [0] * 14)]))
    flat = str(area("Stored", DAYS, [0] * 14, "#4f46e5"))
    assert "<polyline" in flat
    assert "nan" not in flat
    grown = str(area("Stored", DAYS, [i * 3 * 1024**3 for i in range(14)], "#4f46e5"))
    assert "GiB" in grown
    assert "2026-03-14: 39.00 GiB" in grown


@pytest.mark.parametrize(
    ("value", "text"),
    [(None, "—"), (0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"), (5 * 1024**3, "5.0 GiB")],
)
def test_human_bytes(value: int | None, text: str) -> None:
    assert human_bytes(value) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "—"),
        (0.25, "250 ms"),
        (4.2, "4.2 s"),
        (61, "1 min 1 s"),
        (120, "2 min"),
        (3600 * 6, "6 h"),
        (3600 * 6 + 60, "6 h 1 min"),
        (86400 * 2 + 3600, "2 d 1 h"),
    ],
)
def test_human_duration(seconds: float | None, text: str) -> None:
    assert human_duration(seconds) == text


def test_ago_and_percent() -> None:
    now = datetime(2026, 3, 1, 12, tzinfo=UTC)
    assert ago(None, now) == "never"
    assert ago(now - timedelta(seconds=20), now) == "just now"
    assert ago(now - timedelta(minutes=5), now) == "5 min ago"
    assert ago(now + timedelta(hours=3, minutes=5), now) == "in 3 h"
    assert ago(now - timedelta(days=2, hours=1), now) == "2 d ago"
    assert percent(None) == "—"
    assert percent(1.0) == "100 %"
    assert percent(0.9876) == "98.8 %"


@pytest.mark.parametrize(
    ("target", "where"),
    [
        (None, "/"),
        ("/backups?status=failed", "/backups?status=failed"),
        ("https://evil.example/", "/"),
        ("//evil.example/x", "/"),
        ("/\\evil.example", "/"),
        ("javascript:alert(1)", "/"),
        ("backups", "/"),
        ("/ok\r\nSet-Cookie: x=1", "/"),
    ],
)
def test_next_is_always_a_local_path(target: str | None, where: str) -> None:
    assert safe_next(target) == where


@pytest.mark.parametrize(
    ("cron", "preset"),
    [
        ("0 2 * * *", "0 2 * * *"),
        ("0  2 * * *", "0 2 * * *"),
        ("@hourly", "0 * * * *"),
        ("5 2 * * *", CUSTOM),
        ("not a cron", CUSTOM),
    ],
)
def test_cron_builder_recognises_its_presets(cron: str, preset: str) -> None:
    assert preset_of(cron) == preset
