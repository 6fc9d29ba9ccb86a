"""``krakenfeed up --demo`` end to end: embedded Tansu and PostgreSQL, the workers as
supervised processes, and the results commands after it has exited.

Given a fresh data directory, when the demo runs, then it exits 0 by itself, leaves
no process behind and stores anomalies that match the demo's labels. A second run,
whose detector is killed halfway, restarts it, finds everything again and adds no
row. ``anomalies``, ``quality`` and ``plot`` then read the stored results, starting
and stopping the data directory's PostgreSQL themselves.
"""

from __future__ import annotations

import json
import os
import signal
import struct
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from krakenfeed.embedded import wait_until
from krakenfeed.local.demo import DEMO_FEED, Demo, demo, found
from krakenfeed.local.store import local_postgres, running_port
from krakenfeed.store.connection import connect
from tests.up_harness import LocalHome, local_home

TABLES = ("ticker", "trades", "anomalies")


def _counts(home: LocalHome) -> dict[str, int]:
    with local_postgres(home.data_dir) as url, connect(url) as conn:
        return {
            table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # type: ignore[index]
            for table in TABLES
        }


def _sequence_gaps(home: LocalHome) -> list[tuple[str, int]]:
    with local_postgres(home.data_dir) as url, connect(url) as conn:
        return conn.execute(  # type: ignore[return-value]
            "SELECT product, exchange_time_ms FROM quality_events"
            " WHERE kind = 'sequence_gap' ORDER BY 1, 2"
        ).fetchall()


@pytest.fixture(scope="module")
def bundled() -> Demo:
    return demo()


@pytest.fixture(scope="module")
def home() -> Iterator[LocalHome]:
    with local_home() as home:
        yield home


@pytest.fixture(scope="module")
def first_run(home: LocalHome) -> Any:
    # Twice the default pace: the same path, half the wait.
    return home.run("up", "--demo", "--pace", "120x")


def test_the_demo_exits_by_itself_with_status_0_and_leaves_no_process(
    home: LocalHome, first_run: Any, bundled: Demo
) -> None:
    assert first_run.returncode == 0, first_run.stdout + first_run.stderr
    assert "the replay ended and the detector caught up" in first_run.stdout
    assert f"{bundled.events}/{bundled.events} frames" in first_run.stdout
    assert "ingest-futures exit 0, detector exit 0" in first_run.stdout
    assert home.leftovers() == []
    assert running_port(home.data_dir) is None
    # It ended only after the detector had stored every market event.
    counts = _counts(home)
    assert counts["ticker"] + counts["trades"] == bundled.events


def test_the_stored_anomalies_match_the_demo_labels(
    home: LocalHome, first_run: Any, bundled: Demo
) -> None:
    listed = home.run("anomalies", "--format", "json")
    assert listed.returncode == 0, listed.stderr
    anomalies = json.loads(listed.stdout)
    assert isinstance(anomalies, list)
    assert {a["feed"] for a in anomalies} == {str(DEMO_FEED)}
    stored = [(a["product"], a["detector"], a["event_time_ms"]) for a in anomalies]

    recalled = [label for label in bundled.labels if found(label, stored)]
    assert len(bundled.labels) >= 8
    assert len(recalled) >= 0.95 * len(bundled.labels), set(bundled.labels) - set(recalled)
    unlabelled = Counter(
        detector
        for product, detector, time_ms in stored
        if not any(found(label, [(product, detector, time_ms)]) for label in bundled.labels)
    )
    for detector, false_positives in unlabelled.items():
        assert false_positives * 10_000 <= bundled.events, (detector, false_positives)
    summary = f"{len(recalled)} of {len(bundled.labels)} labelled anomalies found within ±5 s"
    assert summary in first_run.stdout


def test_a_second_run_whose_detector_is_killed_is_restarted_and_adds_no_rows(
    home: LocalHome, first_run: Any
) -> None:
    before = _counts(home)
    gaps_before = _sequence_gaps(home)
    assert gaps_before, "the demo's silent minutes skip trade sequence numbers"
    assert before["ticker"] > 1000 and before["trades"] > 1000 and before["anomalies"] >= 8
    with home.running("up", "--demo", "--pace", "120x") as second:
        wait_until(lambda: second.printed("flat_line"), 60, "the detector's first anomaly")
        os.kill(home.pid_of(" detect "), signal.SIGKILL)
        code, output = second.wait(timeout=90)
    assert code == 0, output
    assert "detector exited with code -9; restarting in 1.0s" in output
    assert "the replay ended and the detector caught up" in output
    # The fresh broker's anomalies topic holds only this run's findings: the restarted
    # detector found every anomaly again, and stored none twice.
    with local_postgres(home.data_dir) as url, connect(url) as conn:
        stored = conn.execute("SELECT detector, event_time_ms FROM anomalies").fetchall()
    for detector, time_ms in stored:
        at = datetime.fromtimestamp(time_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
        assert any(at in line and detector in line for line in output.splitlines()), detector
    assert _counts(home) == before
    # A sequence gap carries the exchange time of the trade that revealed it, so
    # the rerun's gaps are the same observations, stored once.
    assert _sequence_gaps(home) == gaps_before
    assert home.leftovers() == []


def test_quality_reports_per_product_after_up_exited(home: LocalHome, first_run: Any) -> None:
    report = home.run("quality", "--feed", "demo")
    assert report.returncode == 0, report.stderr
    line = next(row for row in report.stdout.splitlines() if "PF_XBTUSD" in row)
    counts = _counts(home)
    assert str(counts["ticker"]) in line and str(counts["trades"]) in line
    assert "trades missing" in line, "the demo's silent minutes skip trade sequence numbers"
    assert running_port(home.data_dir) is None


def test_plot_writes_a_png_of_the_requested_size(
    home: LocalHome, first_run: Any, tmp_path: Path
) -> None:
    target = tmp_path / "demo.png"
    plotted = home.run(
        "plot", "--feed", "local/demo", "--product", "PF_XBTUSD", "-o", str(target),
        "--width", "1200", "--height", "800",
    )  # fmt: skip
    assert plotted.returncode == 0, plotted.stderr
    data = target.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    assert struct.unpack(">II", data[16:24]) == (1200, 800)
    assert len(data) > 50_000, "a plot with three panels is more than an empty canvas"
    marked = _counts(home)["anomalies"]
    assert f"{marked} anomalies marked" in plotted.stdout
    assert running_port(home.data_dir) is None
