"""What a deployed krakenfeed must show: anomaly rows in PostgreSQL, traces in Jaeger.

The kind end-to-end workflow runs this module against the cluster (through
``kubectl port-forward``); ``tests/test_deploy_checks.py`` runs the same
functions against the harness's PostgreSQL. Each check polls until it holds or
its deadline passes, then fails with what it saw.

    python -m tests.deploy_checks anomalies --postgres-url URL --feed NS/NAME
    python -m tests.deploy_checks traces --jaeger-url http://127.0.0.1:16686

Only psycopg and the standard library are needed, so a CI runner installs
just ``psycopg[binary]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import psycopg
from psycopg import errors

T = TypeVar("T")

SERVICE_PREFIX = "krakenfeed"
"""Traces count when their service name starts with this (ingest, detector, ...)."""


def table_counts(postgres_url: str, feed: str) -> dict[str, int]:
    """Rows per krakenfeed table for one feed; -1 for a table that does not exist yet."""
    counts: dict[str, int] = {}
    with psycopg.connect(postgres_url, connect_timeout=10, autocommit=True) as conn:
        for table in ("ticker", "trades", "anomalies", "quality_events"):
            try:
                row = conn.execute(
                    f"SELECT count(*) FROM {table} WHERE feed = %s",
                    (feed,),
                ).fetchone()
            except errors.UndefinedTable:
                counts[table] = -1
            else:
                counts[table] = int(row[0]) if row else 0
    return counts


def wait_for_anomalies(
    postgres_url: str, feed: str, *, minimum: int = 1, timeout_s: float = 600, poll_s: float = 5
) -> dict[str, int]:
    """Poll until the feed has ``minimum`` anomaly rows; returns the last counts."""
    return _poll(
        lambda: table_counts(postgres_url, feed),
        lambda counts: counts["anomalies"] >= minimum,
        f"{minimum} anomaly rows for feed {feed!r}",
        timeout_s,
        poll_s,
    )


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def krakenfeed_traces(jaeger_url: str, lookback: str = "1h") -> dict[str, int]:
    """Traces per krakenfeed service, from Jaeger's query API (/api/services, /api/traces)."""
    base = jaeger_url.rstrip("/")
    if urllib.parse.urlsplit(base).scheme not in {"http", "https"}:
        raise ValueError(f"--jaeger-url must be http(s)://..., got {jaeger_url!r}")
    services = _get_json(f"{base}/api/services")
    names = services.get("data") or []
    found: dict[str, int] = {}
    for service in names:
        if not str(service).startswith(SERVICE_PREFIX):
            continue
        query = urllib.parse.urlencode({"service": service, "lookback": lookback, "limit": 50})
        traces = _get_json(f"{base}/api/traces?{query}")
        data = traces.get("data") or []
        found[str(service)] = sum(1 for trace in data if trace.get("spans"))
    return found


def wait_for_traces(
    jaeger_url: str, *, minimum: int = 1, timeout_s: float = 600, poll_s: float = 5
) -> dict[str, int]:
    """Poll until krakenfeed services have ``minimum`` traces in all; returns the last counts."""
    return _poll(
        lambda: krakenfeed_traces(jaeger_url),
        lambda counts: sum(counts.values()) >= minimum,
        f"{minimum} traces from {SERVICE_PREFIX}* services in Jaeger",
        timeout_s,
        poll_s,
    )


def _poll(
    observe: Callable[[], T],
    holds: Callable[[T], bool],
    wanted: str,
    timeout_s: float,
    poll_s: float,
) -> T:
    deadline = time.monotonic() + timeout_s
    last_error = ""
    while True:
        try:
            seen = observe()
        except (OSError, psycopg.OperationalError) as exc:
            last_error = f"{type(exc).__name__}: {exc}"
        else:
            if holds(seen):
                return seen
            last_error = f"saw {seen}"
        if time.monotonic() >= deadline:
            raise AssertionError(f"expected {wanted} within {timeout_s:g} s; {last_error}")
        time.sleep(poll_s)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.deploy_checks", description=__doc__)
    parser.add_argument("--timeout-s", type=float, default=600)
    parser.add_argument("--poll-s", type=float, default=5)
    parser.add_argument("--minimum", type=int, default=1)
    checks = parser.add_subparsers(dest="check", required=True)
    anomalies = checks.add_parser("anomalies", help="anomaly rows of a feed in PostgreSQL")
    anomalies.add_argument("--postgres-url", required=True)
    anomalies.add_argument("--feed", required=True, help="namespace/name of the KrakenFeed")
    traces = checks.add_parser("traces", help="krakenfeed traces in Jaeger's query API")
    traces.add_argument("--jaeger-url", required=True)
    args = parser.parse_args(argv)
    try:
        if args.check == "anomalies":
            seen = wait_for_anomalies(
                args.postgres_url,
                args.feed,
                minimum=args.minimum,
                timeout_s=args.timeout_s,
                poll_s=args.poll_s,
            )
        else:
            seen = wait_for_traces(
                args.jaeger_url, minimum=args.minimum, timeout_s=args.timeout_s, poll_s=args.poll_s
            )
    except AssertionError as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    print(f"ok: {args.check}: {seen}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
