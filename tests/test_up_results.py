"""The results commands' queries on real PostgreSQL: given stored quality events and
anomalies, the quality report counts each kind per product (or per connection), and
the filters narrow every query the same way."""

from __future__ import annotations

import socket
from datetime import UTC, datetime
from pathlib import Path

import pytest
from psycopg.types.json import Jsonb

from krakenfeed.contracts import FeedId
from krakenfeed.embedded import free_port
from krakenfeed.local import store
from krakenfeed.local.results import Filters, anomalies, parse_since, quality, series
from krakenfeed.local.store import ROOT_DATA_DIR, data_dir, local_postgres
from krakenfeed.store import migrate
from krakenfeed.store.connection import connect
from tests.up_harness import local_home

NOW = datetime(2026, 8, 6, 12, 0, tzinfo=UTC)
T0 = int(NOW.timestamp() * 1000)


def test_since_takes_a_duration_or_a_time() -> None:
    assert parse_since("30m", NOW) == T0 - 30 * 60_000
    assert parse_since("2h", NOW) == T0 - 7_200_000
    assert parse_since("7d", NOW) == T0 - 7 * 86_400_000
    assert parse_since("2026-08-06T12:00:00") == T0
    assert parse_since("2026-08-06T14:00:00+02:00") == T0
    with pytest.raises(ValueError, match="--since: got 'yesterday'; use a duration"):
        parse_since("yesterday")


def test_the_data_directory_follows_xdg_and_root_gets_one_postgres_can_enter(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert data_dir() == tmp_path / "krakenfeed"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    assert data_dir() == tmp_path / ".local/share/krakenfeed"
    monkeypatch.setattr("os.geteuid", lambda: 0)
    assert data_dir() == ROOT_DATA_DIR


def _quality_event(
    conn: object, event_id: str, kind: str, product: str | None, **extra: object
) -> None:
    conn.execute(  # type: ignore[attr-defined]
        "INSERT INTO quality_events (feed, event_id, source, kind, product, received_time_ns,"
        " detail, reason, attributes) VALUES (%s, %s, 'futures', %s, %s, %s, 'd', %s, %s)",
        (
            str(extra.get("feed", "local/a")), event_id, kind, product,
            (T0 + int(extra.get("offset_ms", 0))) * 1_000_000,  # type: ignore[call-overload]
            extra.get("reason"), Jsonb(extra.get("attributes", {})),
        ),
    )  # fmt: skip


def _anomaly(
    conn: object, detector: str, time_ms: int, value: float, feed: str = "local/a"
) -> None:
    conn.execute(  # type: ignore[attr-defined]
        "INSERT INTO anomalies (feed, product, detector, event_time_ms, detected_time_ns, value,"
        " baseline_low, baseline_high, score, severity) VALUES"
        " (%s, 'PF_XBTUSD', %s, %s, 0, %s, 0, 1, 2, 'warning')",
        (feed, detector, time_ms, value),
    )


def test_quality_counts_each_kind_per_product_and_per_connection(postgres_url: str) -> None:
    with connect(postgres_url) as conn:
        migrate(conn)
        _quality_event(conn, "1", "dead_letter", "PF_XBTUSD", reason="crossed_quote")
        _quality_event(conn, "2", "dead_letter", "PF_XBTUSD", reason="crossed_quote")
        _quality_event(conn, "3", "dead_letter", None, reason="malformed_json")
        _quality_event(conn, "4", "sequence_gap", "PF_XBTUSD", attributes={"missing": 7})
        _quality_event(conn, "5", "sequence_gap", "PF_XBTUSD", attributes={"missing": 3})
        _quality_event(conn, "6", "reconnect", None)
        _quality_event(conn, "7", "stale_product", "PF_XBTUSD")
        _quality_event(conn, "8", "exchange_status", None)
        _quality_event(conn, "9", "reconnect", None, offset_ms=-3_600_000)
        _quality_event(conn, "10", "reconnect", None, feed="local/b")
        _anomaly(conn, "stale", T0 + 1, 31.5)
        _anomaly(conn, "price_jump", T0 + 2, 64_000.0)

        report = quality(conn, Filters(feed=FeedId.parse("a"), since_ms=T0 - 60_000))
        by_product = {row.product: row for row in report}
        assert set(by_product) == {"PF_XBTUSD", "(futures)"}
        product, connection = by_product["PF_XBTUSD"], by_product["(futures)"]
        assert product.invalid == {"crossed_quote": 2}
        assert (product.sequence_gaps, product.missing_trades) == (2, 10)
        assert (product.stale_periods, product.stale_seconds) == (2, 31.5)
        assert connection.invalid == {"malformed_json": 1}
        assert connection.reconnects == 1, "the older reconnect and feed b's are filtered out"
        assert connection.other == {"exchange_status": 1}

        found = anomalies(conn, Filters(detector="stale"))
        assert [(a["detector"], a["value"], a["time"]) for a in found] == [
            ("stale", 31.5, "2026-08-06T12:00:00.001+00:00")
        ]
        assert len(anomalies(conn, Filters(product="BTC/USD"))) == 0
        assert series(conn, Filters(feed=FeedId.parse("b"))) == {}


def test_a_port_taken_between_choice_and_start_is_replaced_by_another(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with local_home() as home, socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        # The race a free port can lose: someone binds it before PostgreSQL does.
        choices = iter([port])
        monkeypatch.setattr(store, "free_port", lambda: next(choices, None) or free_port())
        with local_postgres(home.data_dir) as url, connect(url) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
            assert f":{port}/" not in url
        server_log = (store.cluster_root(home.data_dir) / "server.log").read_text()
        assert "could not bind" in server_log, "the first start met the taken port"
        assert home.leftovers() == []
