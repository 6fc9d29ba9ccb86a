"""``krakenfeed up``: a KrakenFeed on this machine, from Kraken (or a replay) to PostgreSQL.

    Kraken / replay ─▶ ingest per source ─▶ Kafka (Tansu) ─▶ detector ─▶ PostgreSQL
                       └────── supervised child processes ──────┘

The broker and PostgreSQL are embedded unless ``--broker`` and ``--postgres-url``
name others. The workers run as the same ``krakenfeed ingest`` and ``krakenfeed
detect`` commands the operator deploys, restarted with backoff when they exit.
A replay or the demo ends the run once the detector has committed everything;
Ctrl-C or SIGTERM ends it at any time: ingest first, then the detector (which
commits what it has), then the servers. The rows stay in PostgreSQL.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.logging import RichHandler

from krakenfeed.contracts import FeedId, KrakenFeedSpec, Stream
from krakenfeed.contracts.monitoring import METRICS_PATH
from krakenfeed.embedded import EmbeddedKafka
from krakenfeed.embedded.net import free_port, port_open
from krakenfeed.kafka import contract_topics, make_application
from krakenfeed.local import demo as bundled
from krakenfeed.local.monitor import FeedMonitor
from krakenfeed.local.store import data_dir, local_postgres
from krakenfeed.local.supervisor import ChildSpec, Supervisor, krakenfeed_argv
from krakenfeed.local.view import LiveView, anomaly_line, summary_table
from krakenfeed.replay.capture import read_capture
from krakenfeed.replay.command import parse_pace
from krakenfeed.replay.server import ReplayServer
from krakenfeed.replay.session import Session, session_from_capture
from krakenfeed.store.connection import connect

log = logging.getLogger(__name__)

_TICK_S = 0.25
_STOP_TIMEOUT_S = 20.0
_REPLAY_ATTEMPTS = 5
"""A replay gives up on a worker that failed this many times in a row; a live feed never does."""


@dataclass(frozen=True)
class UpOptions:
    feed: FeedId
    spec: KrakenFeedSpec
    session: Session | None = None
    """The replayed session (``--replay``, ``--demo``); None reads live Kraken."""
    pace: str = "original"
    broker: str | None = None
    postgres_url: str | None = None
    retention_days: int = 30
    detector_config: str | None = None
    log_level: str = "INFO"
    demo: bundled.Demo | None = None


def demo_options(pace: str | None, **kwargs: Any) -> UpOptions:
    demo = bundled.demo()
    # Keep the demo's own day: its times are fixed, so that a rerun adds no rows.
    age_days = (datetime.now(UTC).date() - demo.first_day).days + 1
    return UpOptions(
        feed=demo.feed,
        spec=demo.spec,
        session=demo.session,
        pace=pace or bundled.DEMO_PACE,
        retention_days=max(kwargs.pop("retention_days", 30), age_days),
        demo=demo,
        **kwargs,
    )


def replay_options(capture: Path, pace: str | None, **kwargs: Any) -> UpOptions:
    return UpOptions(
        session=session_from_capture(read_capture(capture)), pace=pace or "original", **kwargs
    )


def spot_pace_warning(options: UpOptions) -> str | None:
    """Spot tickers carry no exchange time: their event time is when they arrive, so a
    replay at any other pace than the original changes the clock the detectors see."""
    if options.session is None or options.pace == "original":
        return None
    if not options.session.frames.get("spot"):
        return None
    return (
        f"the replay plays spot at {options.pace}: spot tickers carry no exchange time, so "
        "their time-based detectors see a compressed market; use --pace original for those"
    )


class ReplayEnd:
    """When a replay is over: its server has sent every frame, the detector has
    committed everything on its input topics, and those stayed still for ``quiet_s``
    with at least ``expected`` frames' records seen on Kafka, or for
    ``uncounted_quiet_s`` when they cannot all be counted (a capture's frame may carry
    several records, or none)."""

    def __init__(
        self,
        expected: int,
        clock: Callable[[], float] = time.monotonic,
        quiet_s: float = 1.0,
        uncounted_quiet_s: float = 5.0,
    ) -> None:
        self.expected = expected
        self._clock = clock
        self._quiet_s = quiet_s
        self._uncounted_quiet_s = uncounted_quiet_s
        self._total = -1
        self._still_since: float | None = None

    def reached(self, sent_all: bool, total: int, lag: int, frames_seen: int) -> bool:
        now = self._clock()
        if not sent_all or lag or total != self._total:
            self._total, self._still_since = total, now
            return False
        assert self._still_since is not None
        quiet = self._quiet_s if frames_seen >= self.expected else self._uncounted_quiet_s
        return now - self._still_since >= quiet


class _StopRequested:
    def __init__(self) -> None:
        self.event = threading.Event()
        self.signal: str | None = None

    def __call__(self, signum: int, frame: Any) -> None:
        self.signal = signal.Signals(signum).name
        self.event.set()


def run_up(options: UpOptions, console: Console | None = None) -> int:
    """Run until the replay ends or a stop is requested; 0 then, 1 when a worker of a
    replay keeps failing."""
    # Without a terminal the view prints once, at the end; keep its lines readable.
    console = console or (Console() if sys.stdout.isatty() else Console(width=120))
    # Log lines go above the live table instead of through it.
    logging.getLogger().handlers = [RichHandler(console=console, show_path=False)]
    if options.broker:
        _require_reachable(options.broker)
    stop = _StopRequested()
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    base = data_dir()
    run_logs = base / "logs" / f"{options.feed.name}-{datetime.now(UTC):%Y%m%dT%H%M%S}"
    run_logs.mkdir(parents=True, exist_ok=True)
    try:
        with contextlib.ExitStack() as stack:
            broker = (
                options.broker
                or stack.enter_context(
                    EmbeddedKafka(log_path=run_logs / "tansu.log", ends_with_parent=True)
                ).bootstrap
            )
            postgres_url = options.postgres_url or stack.enter_context(local_postgres(base))
            kraken = (
                stack.enter_context(
                    ReplayServer(options.session, pace=parse_pace(options.pace), keep_times=True)
                )
                if options.session is not None
                else None
            )
            # Created here once, so the workers never race each other to create them.
            contract_topics(make_application(broker), broker, options.feed, list(Stream))
            state_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="krakenfeed-state-"))
            children = _children(options, broker, postgres_url, Path(state_dir), kraken, run_logs)
            supervisor = Supervisor(children)
            # A broker of our own is fresh; another may hold days of this feed's history.
            monitor = FeedMonitor(broker, options.feed, from_start=options.broker is None)
            stack.callback(monitor.close)
            console.print(
                f"krakenfeed up: feed {options.feed} · broker {broker} · data {base} · "
                f"logs {run_logs}"
            )
            console.print(
                "metrics: "
                + " · ".join(
                    f"{child.name} http://127.0.0.1:{child.http_port}{METRICS_PATH}"
                    for child in children
                )
            )
            warning = spot_pace_warning(options)
            if warning:
                log.warning(warning)
            supervisor.start()
            try:
                why, code = _watch(options, supervisor, monitor, kraken, stop, console)
            finally:
                ingest = [name for name in supervisor.children if name.startswith("ingest-")]
                exits = supervisor.stop([*ingest, "detector"], timeout=_STOP_TIMEOUT_S)
            console.line()
            console.print(
                f"stopped in order ({why}): "
                + ", ".join(f"{name} exit {code}" for name, code in exits.items())
                + "; the rows stay in PostgreSQL"
            )
            _summary(options, postgres_url, console)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return code


class BrokerUnreachableError(RuntimeError):
    pass


def _require_reachable(bootstrap: str) -> None:
    """Fail at once, rather than after the admin client's timeout, on a wrong --broker."""
    for server in bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        if port.isdigit() and port_open(int(port), host or "127.0.0.1"):
            return
    raise BrokerUnreachableError(f"--broker: no Kafka broker answers at {bootstrap}")


def _children(
    options: UpOptions,
    broker: str,
    postgres_url: str,
    state_dir: Path,
    kraken: ReplayServer | None,
    logs: Path,
) -> list[ChildSpec]:
    common = [
        "--namespace",
        options.feed.namespace,
        "--feed",
        options.feed.name,
        "--broker",
        broker,
    ]
    children = []
    for source in options.spec.sources:
        # Each worker serves its metrics and probes on a port of its own: one
        # KRAKENFEED_HTTP_PORT inherited by all of them would clash.
        port = free_port()
        args = [
            "ingest", *common, "--api", source.api, "--http-port", str(port),
            "--products", ",".join(source.products), "--channels", ",".join(source.channels),
        ]  # fmt: skip
        url = kraken.url(source.api) if kraken is not None else source.url
        if url:
            args += ["--url", url]
        if kraken is not None:
            # A replay keeps the session's own times, however far they are from now.
            args += ["--max-clock-skew-ms", "0"]
        children.append(
            ChildSpec(
                f"ingest-{source.api}",
                krakenfeed_argv("--log-level", options.log_level, *args),
                log_path=logs / f"ingest-{source.api}.log",
                http_port=port,
            )
        )
    port = free_port()
    detect = [
        "detect", *common, "--state-dir", str(state_dir), "--http-port", str(port),
        "--retention-days", str(options.retention_days),
    ]  # fmt: skip
    if options.detector_config:
        detect += ["--detector-config", options.detector_config]
    children.append(
        ChildSpec(
            "detector",
            krakenfeed_argv("--log-level", options.log_level, *detect),
            # The URL goes by environment, not argv, where ps would show it.
            env={"KRAKENFEED_POSTGRES_URL": postgres_url},
            log_path=logs / "detector.log",
            http_port=port,
        )
    )
    return children


def _watch(
    options: UpOptions,
    supervisor: Supervisor,
    monitor: FeedMonitor,
    kraken: ReplayServer | None,
    stop: _StopRequested,
    console: Console,
) -> tuple[str, int]:
    """Show the feed until a stop is requested, the replay is done, or a replay's
    worker keeps failing; returns why, and the exit code that goes with it."""
    expected = _subscribed_frames(options)
    view = LiveView(options.feed, options.spec, expected)
    end = ReplayEnd(expected or 0)
    sources = len(options.spec.sources)
    with Live(console=console, refresh_per_second=4, transient=False) as live:
        while not stop.event.is_set():
            supervisor.poll()
            for anomaly in monitor.poll(timeout=_TICK_S):
                live.console.print(anomaly_line(anomaly))
            lag, total = monitor.detector_lag()
            live.update(view.render(supervisor.children, monitor, lag, time.monotonic()))
            if kraken is None:
                continue
            failing = [
                c.name for c in supervisor.children.values() if c.attempt >= _REPLAY_ATTEMPTS
            ]
            if failing:
                return f"{', '.join(failing)} failed {_REPLAY_ATTEMPTS} times in a row", 1
            if end.reached(kraken.finished_streams >= sources, total, lag, monitor.frames_seen()):
                return "the replay ended and the detector caught up", 0
    return f"{stop.signal or 'a stop'} received", 0


def _subscribed_frames(options: UpOptions) -> int | None:
    """Frames of the replayed session the feed subscribes to, for the progress bar."""
    if options.session is None:
        return None
    return sum(
        1
        for source in options.spec.sources
        for frame in options.session.frames.get(source.api, ())
        if frame.product in source.products and frame.channel in source.channels
    )


def _summary(options: UpOptions, postgres_url: str, console: Console) -> None:
    with connect(postgres_url) as conn:
        rows = conn.execute(
            "SELECT product, detector, event_time_ms FROM anomalies WHERE feed = %s",
            (str(options.feed),),
        ).fetchall()
    found = [(str(p), str(d), int(t)) for p, d, t in rows]
    demo = options.demo
    if demo is None:
        console.print(f"{len(found)} anomalies stored for {options.feed}")
        return
    kinds = sorted({label.kind for label in demo.labels} | {d for _, d, _ in found})
    table = summary_table(
        [
            (
                kind,
                sum(1 for label in demo.labels if label.kind == kind),
                sum(1 for _, d, _ in found if d == kind),
            )
            for kind in kinds
        ],
        f"demo: anomalies labelled in the session and stored for {options.feed}",
    )
    console.print(table)
    recalled = sum(bundled.found(label, found) for label in demo.labels)
    console.print(
        f"{recalled} of {len(demo.labels)} labelled anomalies found within "
        f"±{bundled.TOLERANCE_MS // 1000} s, over {demo.events} market events"
    )
