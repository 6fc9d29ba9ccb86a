"""The kind end-to-end job's PostgreSQL assertion, run here against the harness's PostgreSQL.

The same module (``tests/deploy_checks.py``) runs in the workflow against the
CloudNativePG service. Its Jaeger check needs Jaeger's query API, which this
machine cannot run: only the GitHub job exercises it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from krakenfeed.contracts import FeedId
from krakenfeed.store import migrate
from tests.deploy_checks import table_counts, wait_for_anomalies

ROOT = Path(__file__).parents[1]


def _insert_anomalies(url: str, feed: FeedId, count: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        migrate(conn)
        for index in range(count):
            conn.execute(
                "INSERT INTO anomalies (feed, product, detector, event_time_ms,"
                " detected_time_ns, value, baseline_low, baseline_high, score, severity)"
                " VALUES (%s, 'PF_XBTUSD', 'price_jump', %s, %s, 1.5, 0.9, 1.1, 9.0, 'warning')",
                (str(feed), 1_790_000_000_000 + index, 1_790_000_000_000_000_000 + index),
            )


def test_a_feed_with_anomaly_rows_passes(postgres_url: str, feed: FeedId) -> None:
    _insert_anomalies(postgres_url, feed, 3)
    counts = wait_for_anomalies(postgres_url, str(feed), minimum=3, timeout_s=0, poll_s=0)
    assert counts == {"ticker": 0, "trades": 0, "anomalies": 3, "quality_events": 0}


def test_another_feeds_rows_do_not_count(postgres_url: str, feed: FeedId) -> None:
    _insert_anomalies(postgres_url, feed, 2)
    other = FeedId(feed.namespace, feed.name + "-other")
    with pytest.raises(AssertionError, match=r"1 anomaly rows for feed .*-other.*'anomalies': 0"):
        wait_for_anomalies(postgres_url, str(other), timeout_s=0.2, poll_s=0.1)


def test_a_database_the_detector_never_migrated_reports_missing_tables(
    postgres_url: str,
) -> None:
    assert table_counts(postgres_url, "test/none") == {
        "ticker": -1,
        "trades": -1,
        "anomalies": -1,
        "quality_events": -1,
    }
    with pytest.raises(AssertionError, match="'anomalies': -1"):
        wait_for_anomalies(postgres_url, "test/none", timeout_s=0, poll_s=0)


def test_the_command_polls_until_the_rows_exist(postgres_url: str, feed: FeedId) -> None:
    """The workflow starts the command before the detector has written anything."""
    _insert_anomalies(postgres_url, feed, 0)
    checker = subprocess.Popen(
        [sys.executable, "-m", "tests.deploy_checks", "--timeout-s", "60", "--poll-s", "0.2",
         "anomalies", "--postgres-url", postgres_url, "--feed", str(feed)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        _insert_anomalies(postgres_url, feed, 1)
        out, err = checker.communicate(timeout=60)
    finally:
        checker.kill()
    assert checker.returncode == 0, err
    assert "'anomalies': 1" in out


def test_the_command_fails_with_what_it_saw(postgres_url: str, feed: FeedId) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tests.deploy_checks", "--timeout-s", "0", "anomalies",
         "--postgres-url", postgres_url, "--feed", str(feed)],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert "FAILED: expected 1 anomaly rows" in result.stderr
    assert "'anomalies': -1" in result.stderr
