"""What the workers and the operator expose to Prometheus and to the kubelet.

The workers' HTTP endpoint (``--http-port``), its paths, and every metric with its
labels are named here once: the code that exports a metric, the operator's probes,
the charts' alerts and the Grafana dashboard all use these names, and a test
checks that every metric the charts query is in :data:`METRICS`. Names follow
Prometheus conventions: a ``krakenfeed_`` prefix, base units (seconds),
``_total`` on counters.
"""

from __future__ import annotations

from typing import Final, Literal

import msgspec

WORKER_HTTP_PORT: Final = 9464
"""The port of the workers' HTTP endpoint in a pod, set by the operator."""
WORKER_HTTP_PORT_NAME: Final = "http"
"""The container port's name: the probes and the PodMonitor refer to it."""
OPERATOR_METRICS_PORT: Final = 9464
OPERATOR_METRICS_PORT_NAME: Final = "metrics"
METRICS_PATH: Final = "/metrics"
LIVENESS_PATH: Final = "/livez"
"""200 while the process's loop is alive; the kubelet restarts it otherwise."""
READINESS_PATH: Final = "/readyz"
"""200 while the worker reaches everything it needs; 503 with the reasons otherwise."""

# Label names.
FEED: Final = "feed"
"""The KrakenFeed's name, on every worker metric (the namespace comes from the target)."""
KIND: Final = "kind"
STREAM: Final = "stream"
REASON: Final = "reason"
CAUSE: Final = "cause"
PRODUCT: Final = "product"
PEER: Final = "peer"
"""What a connection gauge is about: one of :data:`PEERS`."""
TOPIC: Final = "topic"
PARTITION: Final = "partition"
DETECTOR: Final = "detector"
RECORD: Final = "record"
RESULT: Final = "result"
READY: Final = "ready"
FEED_NAMESPACE: Final = "feed_namespace"
"""The feed's namespace on operator metrics (``namespace`` is the scrape target's)."""

PEER_KRAKEN: Final = "kraken"
PEER_KAFKA: Final = "kafka"
PEER_POSTGRES: Final = "postgres"
PEERS: Final = (PEER_KRAKEN, PEER_KAFKA, PEER_POSTGRES)


class Metric(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    type: Literal["counter", "gauge", "histogram"]
    help: str
    labels: tuple[str, ...] = ()

    @property
    def series(self) -> tuple[str, ...]:
        """The names a query may use: a histogram's buckets, sum and count."""
        if self.type == "histogram":
            return tuple(self.name + suffix for suffix in ("_bucket", "_sum", "_count"))
        return (self.name,)


INGEST_FRAMES: Final = Metric(
    name="krakenfeed_ingest_frames_total",
    type="counter",
    help="WebSocket frames received from Kraken, by kind (ticker, trade, heartbeat, event:…)",
    labels=(FEED, KIND),
)
INGEST_RECORDS: Final = Metric(
    name="krakenfeed_ingest_records_produced_total",
    type="counter",
    help="Records produced to Kafka, by stream (ticker, trade, dlq, quality)",
    labels=(FEED, STREAM),
)
INGEST_INVALID: Final = Metric(
    name="krakenfeed_ingest_invalid_records_total",
    type="counter",
    help="Frames or items that broke the contract and went to the dead-letter topic, by reason",
    labels=(FEED, REASON),
)
INGEST_DUPLICATES: Final = Metric(
    name="krakenfeed_ingest_duplicates_total",
    type="counter",
    help="Trades and tickers already produced (a re-sent snapshot), skipped",
    labels=(FEED,),
)
INGEST_RECONNECTS: Final = Metric(
    name="krakenfeed_ingest_reconnects_total",
    type="counter",
    help="Connections to Kraken re-established, by the cause of the loss",
    labels=(FEED, CAUSE),
)
INGEST_CONNECT_FAILURES: Final = Metric(
    name="krakenfeed_ingest_connect_failures_total",
    type="counter",
    help="Attempts to connect to Kraken that failed, by cause",
    labels=(FEED, CAUSE),
)
INGEST_LAST_FRAME_AGE: Final = Metric(
    name="krakenfeed_ingest_last_frame_age_seconds",
    type="gauge",
    help="Seconds since the latest valid ticker or trade of each product",
    labels=(FEED, PRODUCT),
)
CONNECTED: Final = Metric(
    name="krakenfeed_connected",
    type="gauge",
    help="1 while the worker reaches the peer (kraken, kafka, postgres), else 0",
    labels=(FEED, PEER),
)
DETECTOR_CONSUMED: Final = Metric(
    name="krakenfeed_detector_records_consumed_total",
    type="counter",
    help="Records the detector's consumer received, by topic and partition",
    labels=(FEED, TOPIC, PARTITION),
)
DETECTOR_LAG: Final = Metric(
    name="krakenfeed_detector_consumer_lag_records",
    type="gauge",
    help="Records on a partition not yet consumed (end offset minus position)",
    labels=(FEED, TOPIC, PARTITION),
)
DETECTOR_ANOMALIES: Final = Metric(
    name="krakenfeed_detector_anomalies_total",
    type="counter",
    help="Anomalies found, by detector and product",
    labels=(FEED, DETECTOR, PRODUCT),
)
DETECTOR_ROWS_WRITTEN: Final = Metric(
    name="krakenfeed_detector_rows_written_total",
    type="counter",
    help="Records whose PostgreSQL rows are committed (new or already there), by record type",
    labels=(FEED, RECORD),
)
DETECTOR_SINK_BATCH_RECORDS: Final = Metric(
    name="krakenfeed_detector_sink_batch_records",
    type="histogram",
    help="Records per PostgreSQL write (one transaction)",
    labels=(FEED,),
)
DETECTOR_SINK_BATCH_SECONDS: Final = Metric(
    name="krakenfeed_detector_sink_batch_duration_seconds",
    type="histogram",
    help="Seconds per PostgreSQL write (one transaction), successful or not",
    labels=(FEED,),
)
OPERATOR_RECONCILES: Final = Metric(
    name="krakenfeed_operator_reconciles_total",
    type="counter",
    help="Reconcile passes, by result (ok, error)",
    labels=(RESULT,),
)
OPERATOR_RECONCILE_SECONDS: Final = Metric(
    name="krakenfeed_operator_reconcile_duration_seconds",
    type="histogram",
    help="Seconds per reconcile pass",
)
OPERATOR_FEEDS: Final = Metric(
    name="krakenfeed_operator_feeds",
    type="gauge",
    help="KrakenFeeds by the status of their Ready condition (True, False, Unknown)",
    labels=(READY,),
)
OPERATOR_FEED_READY: Final = Metric(
    name="krakenfeed_operator_feed_ready",
    type="gauge",
    help="1 while the feed's Ready condition is True, else 0",
    labels=(FEED_NAMESPACE, FEED),
)

METRICS: Final = (
    INGEST_FRAMES,
    INGEST_RECORDS,
    INGEST_INVALID,
    INGEST_DUPLICATES,
    INGEST_RECONNECTS,
    INGEST_CONNECT_FAILURES,
    INGEST_LAST_FRAME_AGE,
    CONNECTED,
    DETECTOR_CONSUMED,
    DETECTOR_LAG,
    DETECTOR_ANOMALIES,
    DETECTOR_ROWS_WRITTEN,
    DETECTOR_SINK_BATCH_RECORDS,
    DETECTOR_SINK_BATCH_SECONDS,
    OPERATOR_RECONCILES,
    OPERATOR_RECONCILE_SECONDS,
    OPERATOR_FEEDS,
    OPERATOR_FEED_READY,
)
"""Every krakenfeed metric."""
