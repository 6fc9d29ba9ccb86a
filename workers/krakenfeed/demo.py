"""``krakenfeed demo``: the pipeline on one machine, from a replayed Kraken to PostgreSQL.

A seeded market with labelled anomalies (``krakenfeed.market``) is turned back
into Kraken frames and played by the replay server over real WebSockets; one
ingest worker per API validates and produces them to an embedded Tansu broker;
the detector finds the anomalies and upserts everything into an embedded
PostgreSQL. The report sets what the detector found beside what was injected.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from pathlib import Path

import psycopg

from krakenfeed.contracts import FeedId, Source
from krakenfeed.embedded import EmbeddedKafka, EmbeddedPostgres, run_until, wait_until
from krakenfeed.ingest.worker import IngestSettings, IngestWorker
from krakenfeed.market import FUTURES, SPOT, Label, generate_market
from krakenfeed.pipeline import build_detector_app
from krakenfeed.replay.server import ReplayServer
from krakenfeed.replay.session import session_from_records

log = logging.getLogger(__name__)

PRODUCTS: dict[Source, tuple[str, ...]] = {"futures": (FUTURES,), "spot": (SPOT,)}


def run_demo(feed: FeedId, market_seconds: int) -> int:
    market = generate_market(seed=7, duration_s=market_seconds)
    session = session_from_records(market.records)
    with (
        EmbeddedKafka() as kafka,
        EmbeddedPostgres() as postgres,
        ReplayServer(session) as kraken,
    ):
        log.info("Tansu on %s, PostgreSQL on %s", kafka.bootstrap, postgres.url)
        started = time.perf_counter()
        workers = [
            IngestWorker(
                IngestSettings(
                    feed=feed,
                    api=api,
                    products=products,
                    channels=("ticker", "trade"),
                    broker=kafka.bootstrap,
                    url=kraken.url(api),
                    # The replay runs faster than real time, so exchange times race
                    # ahead of the wall clock: the freshness check would refuse them.
                    max_clock_skew_ms=0,
                )
            )
            for api, products in PRODUCTS.items()
        ]
        threads = [
            threading.Thread(target=worker.run, name=f"ingest-{worker.settings.api}")
            for worker in workers
        ]
        for thread in threads:
            thread.start()
        try:
            wait_until(lambda: kraken.finished_streams == len(workers), 120, "the replay to finish")
            _wait_for_quiet(workers)
        finally:
            for worker in workers:
                worker.stop()
            for thread in threads:
                thread.join()
        ingested = sum(w.metrics.produced["Ticker"] + w.metrics.produced["Trade"] for w in workers)
        log.info("ingested %d records in %.2fs", ingested, time.perf_counter() - started)

        with tempfile.TemporaryDirectory(prefix="krakenfeed-state-") as state_dir:
            detector, sink = build_detector_app(
                feed, kafka.bootstrap, postgres.url, state_dir=Path(state_dir)
            )
            try:
                run_until(
                    detector,
                    lambda: sink.written["Ticker"] + sink.written["Trade"] >= ingested,
                    120,
                    f"{ingested} records in PostgreSQL",
                )
            finally:
                sink.close()
        elapsed = time.perf_counter() - started
        _report(postgres.url, workers, market.labels)
        print(
            f"{sink.rows_inserted} rows from {ingested} records, "
            f"Kraken to PostgreSQL in {elapsed:.2f}s"
        )
    return 0


def _wait_for_quiet(workers: list[IngestWorker]) -> None:
    """The server has sent everything; wait until the workers have handled it too."""

    def produced() -> int:
        return sum(w.metrics.produced.total() for w in workers)

    last = -1
    while produced() != last:
        last = produced()
        time.sleep(0.2)


def _report(url: str, workers: list[IngestWorker], labels: list[Label]) -> None:
    injected: dict[tuple[str, str], int] = {}
    for label in labels:
        injected[(label.kind, label.product)] = injected.get((label.kind, label.product), 0) + 1
    with psycopg.connect(url) as conn:
        found = conn.execute(
            "SELECT detector, product, count(*) FROM anomalies GROUP BY 1, 2 ORDER BY 1, 2"
        ).fetchall()
        print(f"{'detector':<20} {'product':<10} {'found':>6} {'injected':>9}")
        keys = sorted({(d, p) for d, p, _ in found} | set(injected))
        counts = {(d, p): n for d, p, n in found}
        for detector, product in keys:
            print(
                f"{detector:<20} {product:<10} {counts.get((detector, product), 0):>6} "
                f"{injected.get((detector, product), 0):>9}"
            )
        print(
            "(Spot tickers carry no exchange time, so their event time is the receive time;\n"
            " replayed this fast, an hour of spot quotes arrives in about a second, which\n"
            " the time-based detectors on BTC/USD see as a compressed market.)"
        )
        for table in ("ticker", "trades"):
            group = "detector" if table == "anomalies" else "source"
            rows = conn.execute(
                f"SELECT {group}, product, count(*) FROM {table} GROUP BY 1, 2 ORDER BY 1, 2"
            ).fetchall()
            for kind, product, count in rows:
                print(f"{table:<9} {kind:<19} {product:<10} {count:>7} rows")
    for worker in workers:
        m = worker.metrics
        print(
            f"ingest {worker.settings.api:<8} frames {m.frames.total():>7}  "
            f"dead letters {m.invalid.total():>3}  quality events {m.produced['QualityEvent']:>3}  "
            f"duplicates skipped {m.duplicates}"
        )
