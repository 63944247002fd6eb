"""Bar charts drawn as SVG on the server.

The page's Content-Security-Policy forbids inline styles and scripts, so bar
sizes and colours are SVG attributes computed here rather than CSS.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from metadata_engine.model import Field

from . import formatting

#: Width in SVG units of the longest bar.
BAR_WIDTH = 240
DEFAULT_COLOR = "#6c757d"
#: Field types whose values make a useful breakdown.
CHART_TYPES = frozenset({"picklist", "boolean"})
MAX_CHARTS = 2


@dataclass(frozen=True)
class Bar:
    label: str
    count: int
    width: int
    color: str
    share: str


@dataclass(frozen=True)
class BarChart:
    field: Field
    bars: tuple[Bar, ...]
    total: int


def chart_fields(fields: Sequence[Field]) -> list[Field]:
    """Return the first columns of a list view that are worth charting."""
    return [field for field in fields if field.type in CHART_TYPES][:MAX_CHARTS]


def bar_chart(
    field: Field,
    counts: Sequence[tuple[object, int]],
    locale: str,
    words: Mapping[object, str],
) -> BarChart:
    """Lay out one horizontal bar per value, scaled to the largest count.

    ``words`` gives the labels of ``None``, ``True`` and ``False``.
    """
    total = sum(count for _, count in counts)
    largest = max((count for _, count in counts), default=0)
    bars = []
    for value, count in counts:
        if value is None or isinstance(value, bool):
            label = words[value]
        else:
            label = formatting.format_value(field, value, locale)
        option = field.option(str(value)) if field.type == "picklist" else None
        color = formatting.option_color(option) or DEFAULT_COLOR
        width = round(BAR_WIDTH * count / largest) if largest else 0
        share = f"{100 * count / total:.1f} %" if total else "0 %"
        bars.append(Bar(label, count, max(width, 1), color, share))
    return BarChart(field, tuple(bars), total)
