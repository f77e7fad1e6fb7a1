"""Charts drawn on the server as inline SVG: readable without JavaScript, printable,
and styled by attributes only (the pages' CSP allows no inline styles).

Pure functions of the numbers they are given; every mark carries a ``<title>`` (a
tooltip, and what a screen reader announces) and the chart has a ``<desc>``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date

from markupsafe import Markup, escape

WIDTH = 640
HEIGHT = 220
PAD_LEFT = 56
PAD_RIGHT = 12
PAD_TOP = 12
PAD_BOTTOM = 28
GRID = "#e5e7eb"
AXIS_TEXT = "#6b7280"
FONT = 'font-family="system-ui, -apple-system, Segoe UI, Roboto, sans-serif" font-size="11"'


@dataclass(frozen=True)
class Series:
    label: str
    color: str
    values: Sequence[float]


def nice_step(span: float, ticks: int = 4) -> float:
    """A round step (1, 2 or 5 times a power of ten) giving about ``ticks`` ticks."""
    if span <= 0:
        return 1.0
    raw = span / ticks
    power = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 5, 10):
        if raw <= factor * power:
            return float(factor * power)
    return float(10 * power)  # pragma: no cover - the loop always returns


def _ticks(top: float, *, integer: bool) -> tuple[float, list[float]]:
    step = nice_step(top)
    if integer:
        step = max(1.0, math.ceil(step))
    ceiling = step * max(1, math.ceil(top / step)) if top > 0 else step
    count = round(ceiling / step)
    return ceiling, [step * i for i in range(count + 1)]


def _day_label(day: date) -> str:
    return f"{day:%b} {day.day}"


def _frame(
    title: str, desc: str, ceiling: float, ticks: list[float], label: Callable[[float], str]
) -> list[str]:
    plot_h = HEIGHT - PAD_TOP - PAD_BOTTOM
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'xmlns="http://www.w3.org/2000/svg" preserveAspectRatio="xMidYMid meet" '
        f'aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title><desc>{escape(desc)}</desc>",
    ]
    for tick in ticks:
        y = PAD_TOP + plot_h - (tick / ceiling) * plot_h
        parts.append(
            f'<line x1="{PAD_LEFT}" y1="{y:.1f}" x2="{WIDTH - PAD_RIGHT}" y2="{y:.1f}" '
            f'stroke="{GRID}" stroke-width="1"/>'
        )
        parts.append(
            f'<text x="{PAD_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" fill="{AXIS_TEXT}" '
            f"{FONT}>{escape(label(tick))}</text>"
        )
    return parts


def _x_labels(days: Sequence[date], centers: Sequence[float]) -> list[str]:
    every = max(1, math.ceil(len(days) / 7))
    parts = []
    for index, (day, x) in enumerate(zip(days, centers, strict=True)):
        if (len(days) - 1 - index) % every == 0:
            parts.append(
                f'<text x="{x:.1f}" y="{HEIGHT - 8}" text-anchor="middle" fill="{AXIS_TEXT}" '
                f"{FONT}>{escape(_day_label(day))}</text>"
            )
    return parts


def stacked_bars(title: str, days: Sequence[date], series: Sequence[Series]) -> Markup:
    """One bar per day, stacked by series (e.g. backups by status)."""
    totals = [sum(s.values[i] for s in series) for i in range(len(days))]
    ceiling, ticks = _ticks(max(totals, default=0), integer=True)
    plot_w = WIDTH - PAD_LEFT - PAD_RIGHT
    plot_h = HEIGHT - PAD_TOP - PAD_BOTTOM
    slot = plot_w / max(1, len(days))
    bar_w = max(2.0, slot * 0.62)
    desc = f"{sum(totals):g} in {len(days)} days; " + ", ".join(
        f"{s.label}: {sum(s.values):g}" for s in series
    )
    parts = _frame(title, desc, ceiling, ticks, lambda v: f"{v:g}")
    centers = [PAD_LEFT + slot * (i + 0.5) for i in range(len(days))]
    for i, day in enumerate(days):
        y = float(PAD_TOP + plot_h)
        detail = ", ".join(f"{s.values[i]:g} {s.label}" for s in series if s.values[i])
        tooltip = f"{day.isoformat()}: {detail or 'no backups'}"
        parts.append(f"<g><title>{escape(tooltip)}</title>")
        parts.append(
            f'<rect x="{centers[i] - slot / 2:.1f}" y="{PAD_TOP}" width="{slot:.1f}" '
            f'height="{plot_h}" fill="transparent"/>'
        )
        for s in series:
            value = s.values[i]
            if not value:
                continue
            h = value / ceiling * plot_h
            y -= h
            parts.append(
                f'<rect x="{centers[i] - bar_w / 2:.1f}" y="{y:.1f}" width="{bar_w:.1f}" '
                f'height="{h:.1f}" fill="{s.color}" rx="1.5"/>'
            )
        parts.append("</g>")
    parts.extend(_x_labels(days, centers))
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every text part went through escape()


def _byte_unit(top: float) -> tuple[float, str]:
    for power, unit in ((4, "TiB"), (3, "GiB"), (2, "MiB"), (1, "KiB")):
        if top >= 1024**power:
            return float(1024**power), unit
    return 1.0, "B"


def area(title: str, days: Sequence[date], values: Sequence[float], color: str) -> Markup:
    """A line with a filled area under it (e.g. stored bytes per day), in bytes."""
    top = max(values, default=0)
    scale, unit = _byte_unit(top)
    ceiling, ticks = _ticks(top / scale, integer=False)
    plot_w = WIDTH - PAD_LEFT - PAD_RIGHT
    plot_h = HEIGHT - PAD_TOP - PAD_BOTTOM
    slot = plot_w / max(1, len(days))
    centers = [PAD_LEFT + slot * (i + 0.5) for i in range(len(days))]
    ys = [PAD_TOP + plot_h - (v / scale) / ceiling * plot_h for v in values]
    last = values[-1] if values else 0
    desc = f"{last / scale:.1f} {unit} on the last day"
    parts = _frame(title, desc, ceiling, ticks, lambda v: f"{v:g} {unit}")
    if days:
        line = " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(centers, ys, strict=True))
        base = PAD_TOP + plot_h
        parts.append(
            f'<polygon points="{centers[0]:.1f},{base} {line} {centers[-1]:.1f},{base}" '
            f'fill="{color}" fill-opacity="0.14"/>'
        )
        parts.append(
            f'<polyline points="{line}" fill="none" stroke="{color}" stroke-width="2" '
            f'stroke-linejoin="round" stroke-linecap="round"/>'
        )
        for day, x, y, value in zip(days, centers, ys, values, strict=True):
            tooltip = f"{day.isoformat()}: {value / scale:.2f} {unit}"
            parts.append(
                f'<g><title>{escape(tooltip)}</title><rect x="{x - slot / 2:.1f}" y="{PAD_TOP}" '
                f'width="{slot:.1f}" height="{plot_h}" fill="transparent"/>'
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{color}"/></g>'
            )
    parts.extend(_x_labels(days, centers))
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every text part went through escape()
