"""Command-line flags and their environment variables.

Every flag ``--some-flag`` of every ``krakenfeed`` subcommand may also be given as
``KRAKENFEED_SOME_FLAG``; the operator configures workers through those variables.
"""

from __future__ import annotations

from typing import Final, Literal

import msgspec

ENV_PREFIX: Final = "KRAKENFEED_"


def env_var(flag: str) -> str:
    """``--some-flag`` → ``KRAKENFEED_SOME_FLAG``."""
    name = flag.removeprefix("--")
    if not name or name.startswith("-"):
        raise ValueError(f"{flag!r} is not a long flag")
    return ENV_PREFIX + name.replace("-", "_").upper()


class Option(msgspec.Struct, frozen=True, kw_only=True):
    """One flag of a subcommand; the CLI and the operator both read these."""

    flag: str
    help: str
    default: str | None = None
    choices: tuple[str, ...] = ()
    """For a list option, the values each element may take."""
    is_list: bool = False
    """A comma-separated list, such as ``--products PF_XBTUSD,PI_XBTUSD``."""
    value_type: Literal["str", "int", "float"] = "str"
    minimum: float | None = None
    required: bool = False
    secret: bool = False
    """Never echoed in errors or logs."""

    @property
    def env(self) -> str:
        return env_var(self.flag)

    @property
    def dest(self) -> str:
        return self.flag.removeprefix("--").replace("-", "_")


COMMON_OPTIONS: Final = (
    Option(
        flag="--namespace",
        default="local",
        help="namespace of the KrakenFeed; outside Kubernetes it is 'local'",
    ),
    Option(flag="--feed", required=True, help="name of the KrakenFeed"),
    Option(
        flag="--broker",
        default="127.0.0.1:9092",
        help="Kafka bootstrap servers, a comma-separated host:port list",
    ),
)

HTTP_OPTIONS: Final = (
    Option(
        flag="--http-port",
        default="0",
        value_type="int",
        minimum=0,
        help=(
            "port of the HTTP endpoint serving GET /metrics (Prometheus), /livez and /readyz;"
            " 0 (the default) serves none, so several workers share a host without clashing"
        ),
    ),
)
"""The ingest and detector workers' HTTP endpoint; the operator sets it in pods."""

POSTGRES_OPTIONS: Final = (
    Option(
        flag="--postgres-url",
        secret=True,
        help=(
            "libpq connection URL; when absent the libpq variables PGHOST, PGPORT, "
            "PGDATABASE, PGUSER and PGPASSWORD apply (the keys of a CloudNativePG "
            "<cluster>-app secret)"
        ),
    ),
)

POSTGRES_ENV_VARS: Final = ("PGHOST", "PGPORT", "PGDATABASE", "PGUSER", "PGPASSWORD")
"""libpq reads these itself; the operator maps the CloudNativePG secret onto them."""

INGEST_OPTIONS: Final = (
    Option(flag="--api", required=True, choices=("futures", "spot"), help="Kraken API to read"),
    Option(
        flag="--channels",
        is_list=True,
        default="ticker,trade",
        choices=("ticker", "trade"),
        help="comma-separated channels to subscribe to",
    ),
    Option(
        flag="--products",
        is_list=True,
        required=True,
        help="comma-separated product ids as Kraken spells them (PF_XBTUSD, BTC/USD)",
    ),
    Option(flag="--url", help="WebSocket URL; defaults to Kraken's public endpoint for --api"),
    Option(
        flag="--max-clock-skew-ms",
        default="5000",
        value_type="int",
        minimum=0,
        help=(
            "largest accepted |exchange time - receive time| of a live frame, in ms;"
            " 0 disables the check (snapshots are always exempt)"
        ),
    ),
    Option(
        flag="--capture",
        help="also write every raw frame with its receive time to this JSON-lines file (.gz ok)",
    ),
    Option(
        flag="--ping-interval-s",
        default="20",
        value_type="float",
        minimum=1,
        help="seconds between WebSocket protocol pings (Kraken wants one at least every 60 s)",
    ),
    Option(
        flag="--watchdog-s",
        default="30",
        value_type="float",
        minimum=0.1,
        help=(
            "reconnect when no frame at all arrived for this long; heartbeats count"
            " (futures every 10 s, spot every 1 s), so a quiet product never trips it"
        ),
    ),
    Option(
        flag="--stale-after-s",
        default="120",
        value_type="float",
        minimum=0.1,
        help="report a product on the quality topic once it sent no data for this long",
    ),
    Option(
        flag="--stale-after-product",
        is_list=True,
        help="per-product stale thresholds overriding --stale-after-s, e.g. BTC/USD=300",
    ),
    Option(
        flag="--backoff-base-s",
        default="1",
        value_type="float",
        minimum=0,
        help=(
            "reconnect backoff: the first retry after a healthy connection is immediate,"
            " the n-th waits a random 0..min(cap, base*2^(n-2)) s"
        ),
    ),
    Option(
        flag="--backoff-cap-s",
        default="60",
        value_type="float",
        minimum=0,
        help="reconnect backoff: the largest delay between two attempts",
    ),
    Option(
        flag="--healthy-after-s",
        default="30",
        value_type="float",
        minimum=0,
        help="a connection that stayed up this long resets the reconnect backoff",
    ),
)

DETECT_OPTIONS: Final = (
    Option(
        flag="--detector-config",
        help=(
            'detector settings as JSON, e.g. \'{"price_jump": {"threshold": 8}}\'; '
            "omitted fields keep their documented defaults"
        ),
    ),
    Option(
        flag="--state-dir",
        default="state",
        help="directory of the detector's RocksDB state (rebuilt from changelog topics)",
    ),
    Option(
        flag="--retention-days",
        default="30",
        value_type="int",
        minimum=1,
        help="days of market data kept: older day partitions of ticker and trades are dropped",
    ),
    Option(
        flag="--commit-interval-s",
        default="0.25",
        value_type="float",
        minimum=0.05,
        help=(
            "seconds between checkpoints: rows are committed to PostgreSQL, then offsets;"
            " 0.25 keeps a row's p99 delay under 1 s and cost no throughput when measured"
        ),
    ),
    Option(
        flag="--processing-guarantee",
        default="exactly-once",
        choices=("exactly-once", "at-least-once"),
        help=(
            "exactly-once: anomalies, dead letters, state changes and offsets are one Kafka"
            " transaction per checkpoint; at-least-once may repeat them on the anomalies topic"
            " after a crash (PostgreSQL rows are upserts either way)"
        ),
    ),
    Option(
        flag="--instance-id",
        help=(
            "a name for this replica that stays the same across its restarts and differs"
            " from every other replica's: its Kafka transactional id, so a restarted replica"
            " fences the transaction its crashed run left open instead of waiting for it to"
            " time out; defaults to the host name (the pod name on Kubernetes), so give each"
            " replica of a feed on one host its own"
        ),
    ),
)

TOPIC_OPTIONS: Final = tuple(
    Option(
        flag=f"--{stream}-topic",
        help=f"Kafka topic of the {stream} stream (default krakenfeed.<namespace>.<feed>.{stream})",
    )
    for stream in ("ticker", "trade", "dlq", "quality", "anomalies")
)
"""Topic-name overrides from a KrakenFeed's spec.kafka.topics. The operator sets these
variables only for overridden streams; ingest and detect read them into the FeedId."""

OPERATOR_OPTIONS: Final = (
    Option(
        flag="--watch-namespaces",
        is_list=True,
        default="*",
        help="namespaces whose KrakenFeeds are run, comma-separated; * watches every namespace",
    ),
    Option(
        flag="--liveness-port",
        default="8080",
        value_type="int",
        minimum=1,
        help="port of the liveness endpoint GET /healthz",
    ),
    Option(
        flag="--metrics-port",
        default="0",
        value_type="int",
        minimum=0,
        help="port of the Prometheus endpoint GET /metrics; 0 (the default) serves none",
    ),
    Option(
        flag="--peering",
        default="",
        help=(
            "name of a KopfPeering object through which several operator replicas keep"
            " one of them active; empty (the default) runs standalone, without peering"
        ),
    ),
    Option(
        flag="--worker-image",
        default="ghcr.io/krakenfeed/krakenfeed:0.1.0",
        help="image of the ingest and detector workers when a feed's spec names none",
    ),
    Option(
        flag="--resync-interval-s",
        default="60",
        value_type="float",
        minimum=0.1,
        help="seconds between re-observations of every feed, which also restore drifted children",
    ),
)
