"""The terminal view of ``krakenfeed up``: one live table, anomalies as they happen."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from rich.console import Group, RenderableType
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn
from rich.table import Table

from krakenfeed.contracts import Anomaly, FeedId, KrakenFeedSpec
from krakenfeed.local.monitor import FeedMonitor
from krakenfeed.local.supervisor import Child, ChildState

_SEVERITY_STYLE = {"info": "cyan", "warning": "yellow", "critical": "bold red"}


def connection_state(child: Child, seen_frames: bool) -> str:
    if child.state is ChildState.BACKING_OFF:
        return (
            f"[yellow]connecting (attempt {child.attempt + 1}, "
            f"next in {math.ceil(child.seconds_to_restart())} s)[/]"
        )
    if child.state is ChildState.STOPPED:
        return "stopped"
    return "[green]streaming[/]" if seen_frames else "connecting"


@dataclass
class LiveView:
    feed: FeedId
    spec: KrakenFeedSpec
    replay_frames: int | None = None
    """Frames in the replayed session, for the progress bar; None for a live feed."""

    def __post_init__(self) -> None:
        self.progress = Progress(
            TextColumn("replay"), BarColumn(), TaskProgressColumn(), TextColumn("{task.fields[of]}")
        )
        self._task = (
            self.progress.add_task("replay", total=self.replay_frames, of="")
            if self.replay_frames is not None
            else None
        )

    def render(
        self, children: dict[str, Child], monitor: FeedMonitor, lag: int, now: float
    ) -> RenderableType:
        table = Table(title=f"krakenfeed up · {self.feed}", expand=False)
        for column in ("source", "product", "connection", "frames/s", "last frame", "frames"):
            table.add_column(column, justify="right" if column.startswith("frames") else "left")
        for source in self.spec.sources:
            child = children[f"ingest-{source.api}"]
            activity = [monitor.products.get(p) for p in source.products]
            state = connection_state(child, any(a is not None for a in activity))
            notes = [
                f"{count} {label}"
                for kind, label in (("reconnect", "reconnects"), ("dead_letter", "invalid"))
                if (count := monitor.quality[(source.api, kind)])
            ]
            if notes:
                state += f" ({', '.join(notes)})"
            for product, seen in zip(source.products, activity, strict=True):
                age = (
                    f"{now - seen.last_seen:.1f} s ago"
                    if seen is not None and seen.last_seen is not None
                    else "-"
                )
                table.add_row(
                    source.api,
                    product,
                    state,
                    f"{seen.rate(now):.1f}" if seen else "0.0",
                    age,
                    str(seen.frames if seen else 0),
                )
        detector = children["detector"]
        workers = Table(show_edge=True)
        for column in ("detector", "consumer lag", "anomalies by detector", "restarts"):
            workers.add_column(column)
        found = ", ".join(
            f"{name} {count}" for name, count in sorted(monitor.anomalies_by_detector.items())
        )
        workers.add_row(
            detector.state.value,
            str(lag),
            found or "none yet",
            str(sum(c.restarts for c in children.values())),
        )
        parts: list[RenderableType] = [table, workers]
        if self._task is not None:
            self.progress.update(
                self._task,
                completed=min(monitor.market_records, self.replay_frames or 0),
                of=f"{monitor.market_records}/{self.replay_frames} frames",
            )
            parts.append(self.progress)
        return Group(*parts)


def anomaly_line(anomaly: Anomaly) -> str:
    at = datetime.fromtimestamp(anomaly.event_time_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
    style = _SEVERITY_STYLE.get(anomaly.severity.value, "")
    return (
        f"[{style}]{anomaly.severity.value:<8}[/] {at}  {anomaly.product:<10} "
        f"{anomaly.detector:<20} value {anomaly.value:.4g} "
        f"(expected {anomaly.baseline_low:.4g}..{anomaly.baseline_high:.4g})"
    )


def summary_table(rows: Sequence[tuple[str, int, int]], title: str) -> Table:
    table = Table(title=title)
    for column in ("detector", "labelled", "found"):
        table.add_column(column, justify="left" if column == "detector" else "right")
    for row in rows:
        table.add_row(row[0], str(row[1]), str(row[2]))
    return table
