"""``krakenfeed plot``: price, spread and traded volume over time, anomalies marked.

Rendered with matplotlib's Agg canvas straight to a file: no display, no pyplot
global state.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
from matplotlib.figure import Figure

from krakenfeed.local.results import Series

_DPI = 100
_MAX_LABELS = 40
"""Past this many anomalies in a panel, the legend's colours name the detectors."""
_PANELS = ("mid price", "spread (bps)", "traded qty / 10 s")


def _times(epoch_ms: list[int]) -> list[datetime]:
    return [datetime.fromtimestamp(ms / 1000, UTC) for ms in epoch_ms]


def render_plot(
    data: dict[tuple[str, str], Series], path: Path, width: int = 1400, height: int = 900
) -> None:
    """Three panels per product, sharing a time axis per product (products may cover
    different spans), anomalies as dashed lines labelled by detector."""
    if not data:
        raise ValueError("nothing to plot: no rows match the filters")
    figure = Figure(figsize=(width / _DPI, height / _DPI), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(data) * len(_PANELS), 1, squeeze=False)[:, 0]
    detectors = sorted({d for s in data.values() for _, d, _ in s.anomalies})
    colours = {d: f"C{(i + 1) % 10}" for i, d in enumerate(detectors)}
    for index, ((feed, product), s) in enumerate(sorted(data.items())):
        price, spread, volume = axes[index * 3 : index * 3 + 3]
        for panel in (spread, volume):
            panel.sharex(price)
        for panel in (price, spread):
            panel.tick_params(labelbottom=False)
        locator = AutoDateLocator()  # type: ignore[no-untyped-call]
        volume.xaxis.set_major_locator(locator)
        volume.xaxis.set_major_formatter(ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]
        volume.set_xlabel("UTC", fontsize=8)
        price.plot(_times(s.ticker_ms), s.mid, color="C0", linewidth=0.8)
        spread.plot(_times(s.ticker_ms), s.spread_bps, color="C0", linewidth=0.8)
        volume.bar(
            _times(s.volume_ms), s.volume, width=10 / 86400, align="edge", color="C0", alpha=0.7
        )
        for panel, label in zip((price, spread, volume), _PANELS, strict=True):
            panel.set_ylabel(label, fontsize=8)
            panel.grid(alpha=0.3)
        price.set_title(f"{product} · {feed}", loc="left", fontsize=10)
        for time_ms, detector, mid in s.anomalies:
            at = datetime.fromtimestamp(time_ms / 1000, UTC)
            for panel in (price, spread, volume):
                panel.axvline(at, color=colours[detector], linestyle="--", linewidth=0.9)
            price.plot([at], [mid], marker="v", color=colours[detector], markersize=7)
            if len(s.anomalies) > _MAX_LABELS:
                continue
            price.annotate(
                detector,
                (at, mid),
                xytext=(3, 8),
                textcoords="offset points",
                rotation=60,
                fontsize=7,
                color=colours[detector],
            )
    if detectors:
        handles = [axes[0].plot([], [], color=colours[d], linestyle="--")[0] for d in detectors]
        figure.legend(
            handles, detectors, loc="outside upper right", ncols=len(detectors), fontsize=8
        )
    figure.savefig(path, dpi=_DPI, format="png")
