"""Server-rendered SVG bar charts: the geometry only, computed here; the drawing is
``templates/_macros/charts.html``. No JavaScript, nothing fetched: every chart comes with a
table of the same numbers for people who do not see it.

A chart is a list of points (one bar each) and the series drawn in every bar:

- ``stacked`` (default): the series are piled up (a distribution: decisions within 7 days,
  within 30 days…);
- ``overlay``: every series starts from the axis, the first (the total) behind the others
  (calls per day, with the errors among them drawn inside the bar).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from datapass.formatting import plural


@dataclass(frozen=True)
class Series:
    key: str  # the point's field
    one: str  # the word for one ("appel"), for the bar's tooltip…
    other: str  # …and for several ("appels")
    tone: str  # CSS modifier: dp-chart__<tone>
    legend: str = ""  # the key's text under the chart (defaults to ``other``)


@dataclass(frozen=True)
class Point:
    label: str  # under the bar (shown every ``label_every`` bars)
    title: str  # the bar's full name (tooltip, first cell of the table row)
    values: dict[str, int]
    attrs: dict[str, Any] | None = None  # data-* attributes of the bar's group


def nice_ceiling(peak: float) -> int:
    """The smallest of 1, 2, 5 × 10ⁿ (n ≥ 0) at or above ``peak`` (at least 1): round
    graduations."""
    if peak <= 1:
        return 1
    power = 10 ** math.floor(math.log10(peak))
    for step in (1, 2, 5, 10):
        if step * power >= peak:
            return int(step * power)
    return int(10 * power)  # pragma: no cover - the loop always returns


def bar_chart(
    points: Sequence[Point],
    series: Sequence[Series],
    *,
    mode: str = "stacked",
    label_every: int | Callable[[int], int] | None = None,
    width: int = 720,
    height: int = 220,
    scale_to_peak: bool = False,
) -> dict[str, Any]:
    """The geometry of a bar chart (see the module's docstring).

    ``scale_to_peak``: the tallest bar reaches the top (graduations at 0, ½ and the peak),
    instead of a round ceiling (1, 2, 5 × 10ⁿ)."""
    if mode not in ("stacked", "overlay"):
        raise ValueError(mode)
    n = max(len(points), 1)
    totals = [
        sum(p.values.get(s.key, 0) for s in series)
        if mode == "stacked"
        else max((p.values.get(s.key, 0) for s in series), default=0)
        for p in points
    ]
    peak = max(totals, default=0)
    top_value = (peak or 1) if scale_to_peak else nice_ceiling(peak)
    left, bottom, top, right_pad = 52, 26, 10, 8
    plot_w, plot_h = width - left - right_pad, height - bottom - top
    base = top + plot_h
    slot = plot_w / n
    bar_w = max(slot * 0.72, 1)
    every = label_every(n) if callable(label_every) else (label_every or _label_every(n))
    bars = []
    for i, point in enumerate(points):
        x = left + i * slot + (slot - bar_w) / 2
        segments, floor = [], 0.0
        for s in series:
            value = point.values.get(s.key, 0)
            h = value / top_value * plot_h
            start = floor if mode == "stacked" else 0.0
            segments.append(
                {
                    "key": s.key,
                    "tone": s.tone,
                    "value": value,
                    "x": round(x, 2),
                    "y": round(base - start - h, 2),
                    "w": round(bar_w, 2),
                    "h": round(h, 2),
                }
            )
            if mode == "stacked":
                floor += h
        described = ", ".join(plural(point.values.get(s.key, 0), s.one, s.other) for s in series)
        bars.append(
            {
                "label": point.label if i % every == 0 else None,
                "title": point.title,
                "tooltip": f"{point.title} : {described}",
                "values": point.values,
                "total": totals[i],
                "attrs": point.attrs or {},
                "segments": [seg for seg in segments if seg["h"] > 0 or mode == "overlay"],
                "lx": round(x + bar_w / 2, 2),
            }
        )
    halves = scale_to_peak or float(top_value / 2).is_integer()
    ticks = [
        {"value": round(top_value * f), "y": round(base - plot_h * f, 2)}
        for f in ((0, 0.5, 1) if halves else (0, 1))
    ]
    return {
        "width": width,
        "height": height,
        "left": left,
        "right": width - right_pad,
        "base": base,
        "label_y": height - 8,
        "bars": bars,
        "ticks": ticks,
        "series": [{"key": s.key, "tone": s.tone, "legend": s.legend or s.other} for s in series],
        "mode": mode,
        "peak": peak,
        "total": sum(totals) if mode == "stacked" else None,
    }


def _label_every(n: int) -> int:
    if n <= 13:
        return 1
    return math.ceil(n / 8)
