"""The PostgreSQL schema, its day partitions and retention, and connecting safely,
on a real PostgreSQL."""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import date, timedelta
from typing import Any, TypeVar

import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

from krakenfeed.embedded.net import free_port, wait_until
from krakenfeed.store import migrate
from krakenfeed.store.connection import StoreConnectionError, connect, describe_conninfo
from krakenfeed.store.migrate import _MIGRATION_LOCK
from krakenfeed.store.partitions import (
    _PARTITION_LOCK,
    create_ahead,
    day_bounds_ms,
    drop_expired,
    ensure_partitions,
    existing_partitions,
    partition_day,
)

Connection = psycopg.Connection[tuple[Any, ...]]
T = TypeVar("T")

TODAY = date(2026, 11, 21)
SECRET = "s3cret"

# Column values of one row per table; the keys are the tables' primary keys.
PRIMARY_KEYS = {
    "ticker": ("feed", "product", "time_key", "event_time_ms"),
    "trades": ("feed", "product", "trade_key", "event_time_ms"),
    "anomalies": ("feed", "product", "detector", "event_time_ms"),
    "quality_events": ("feed", "event_id"),
}


def futures_ticker(day: date, offset_ms: int = 0) -> dict[str, Any]:
    event_time_ms = day_bounds_ms(day)[0] + offset_ms
    return {
        "feed": "prod/kraken", "product": "PF_XBTUSD", "source": "futures",
        "event_time_ms": event_time_ms, "exchange_time_ms": event_time_ms,
        "received_time_ns": event_time_ms * 1_000_000 + 1_234, "bid": 64401.0, "ask": 64402.0,
        "bid_size": 1.5, "ask_size": 2.5, "last": 64401.5, "volume": 1200.0,
        "mark_price": 64401.7, "funding_rate": 1e-5,
    }  # fmt: skip


def spot_ticker(day: date, offset_ms: int = 0) -> dict[str, Any]:
    """The spot ticker has no exchange time: its event time is the receive time in ms."""
    received_time_ns = (day_bounds_ms(day)[0] + offset_ms) * 1_000_000 + 987_654
    return {
        "feed": "prod/kraken", "product": "BTC/USD", "source": "spot",
        "event_time_ms": received_time_ns // 1_000_000, "exchange_time_ms": None,
        "received_time_ns": received_time_ns, "bid": 64400.0, "ask": 64401.0,
        "bid_size": 0.12, "ask_size": 0.5,
    }  # fmt: skip


def futures_trade(day: date, seq: int = 41) -> dict[str, Any]:
    event_time_ms = day_bounds_ms(day)[0] + seq
    return {
        "feed": "prod/kraken", "product": "PF_XBTUSD", "source": "futures",
        "event_time_ms": event_time_ms, "exchange_time_ms": event_time_ms,
        "received_time_ns": event_time_ms * 1_000_000 + 77, "side": "buy", "price": 64401.0,
        "qty": 0.5, "seq": seq, "uid": f"uid-{seq}",
    }  # fmt: skip


def spot_trade(day: date) -> dict[str, Any]:
    event_time_ms = day_bounds_ms(day)[0] + 9
    return {
        "feed": "prod/kraken", "product": "BTC/USD", "source": "spot",
        "event_time_ms": event_time_ms, "exchange_time_ms": event_time_ms,
        "received_time_ns": event_time_ms * 1_000_000 + 5, "side": "sell", "price": 64400.0,
        "qty": 0.01, "trade_id": 9_000_001,
    }  # fmt: skip


def anomaly(day: date) -> dict[str, Any]:
    return {
        "feed": "prod/kraken", "product": "PF_XBTUSD", "detector": "spread_zscore",
        "event_time_ms": day_bounds_ms(day)[0] + 5, "detected_time_ns": 1_786_046_338_000_000_000,
        "value": 12.0, "baseline_low": 0.5, "baseline_high": 2.0, "score": 7.5,
        "severity": "warning", "context": Jsonb({"spread_bps": 12.0}),
    }  # fmt: skip


def dead_letter_event() -> dict[str, Any]:
    return {
        "feed": "prod/kraken", "event_id": "5f0c6f3d0a9e4b6c8d7e6f5a4b3c2d1e", "source": "spot",
        "kind": "dead_letter", "received_time_ns": 1_786_046_338_000_000_000,
        "detail": "bid 64402.0 above ask 64401.0", "reason": "crossed_quote",
        "raw": '{"channel":"ticker"}',
    }  # fmt: skip


def insert(conn: Connection, table: str, row: dict[str, Any]) -> int:
    """INSERT … ON CONFLICT (primary key) DO NOTHING, as the writer does; the rows inserted."""
    statement = sql.SQL(
        "INSERT INTO {table} ({columns}) VALUES ({values}) ON CONFLICT ({key}) DO NOTHING"
    ).format(
        table=sql.Identifier(table),
        columns=sql.SQL(", ").join(map(sql.Identifier, row)),
        values=sql.SQL(", ").join(sql.Placeholder() * len(row)),
        key=sql.SQL(", ").join(map(sql.Identifier, PRIMARY_KEYS[table])),
    )
    return conn.execute(statement, list(row.values())).rowcount


def count(conn: Connection, table: str, day: date | None = None) -> int:
    query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))
    params: tuple[int, ...] = ()
    if day is not None:
        query += sql.SQL(" WHERE event_time_ms >= %s AND event_time_ms < %s")
        params = day_bounds_ms(day)
    row = conn.execute(query, params).fetchone()
    assert row is not None
    result: int = row[0]
    return result


def partition_names(conn: Connection, table: str) -> list[str]:
    return [p.name for p in existing_partitions(conn, table)]


def days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


@pytest.fixture
def db(postgres_url: str) -> Iterator[Connection]:
    """A migrated database, through an autocommit connection."""
    with connect(postgres_url) as conn:
        migrate(conn)
        yield conn


def run_while_holding(
    url: str, lock: int, calls: list[Callable[[], T]], waiters: int
) -> list[Future[T]]:
    """Hold advisory ``lock``, start ``calls`` in threads, wait until ``waiters`` of them
    queue on the lock, then release it: the calls meet at the lock for certain."""
    with psycopg.connect(url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (lock,))
        with ThreadPoolExecutor(len(calls)) as pool:
            try:
                futures = [pool.submit(call) for call in calls]
                wait_until(
                    lambda: _waiting_on_advisory_locks(holder) == waiters,
                    timeout=10,
                    what=f"{waiters} sessions waiting for advisory lock {lock:#x}",
                    interval=0.01,
                )
            finally:
                holder.execute("SELECT pg_advisory_unlock(%s)", (lock,))
    return futures


def _waiting_on_advisory_locks(conn: Connection) -> int:
    row = conn.execute(
        "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database"
        " WHERE l.locktype = 'advisory' AND NOT l.granted AND d.datname = current_database()"
    ).fetchone()
    assert row is not None
    waiting: int = row[0]
    return waiting


# --- migrations -----------------------------------------------------------------


def test_migrations_apply_once_and_create_the_four_tables(postgres_url: str) -> None:
    with connect(postgres_url) as conn:
        assert migrate(conn) == ["0001_market_data.sql"]
        assert migrate(conn) == []
        tables = conn.execute(
            "SELECT relname, relkind FROM pg_class WHERE relname = ANY(%s) ORDER BY relname",
            (list(PRIMARY_KEYS),),
        ).fetchall()
    assert tables == [("anomalies", "r"), ("quality_events", "r"), ("ticker", "p"), ("trades", "p")]


def test_two_starts_that_meet_at_the_migration_lock_both_succeed(postgres_url: str) -> None:
    def start() -> list[str]:
        with connect(postgres_url) as conn:
            return migrate(conn)

    futures = run_while_holding(postgres_url, _MIGRATION_LOCK, [start, start], waiters=2)

    assert sorted(f.result() for f in futures) == [[], ["0001_market_data.sql"]]
    with connect(postgres_url) as conn:
        assert conn.execute("SELECT version FROM schema_migrations").fetchall() == [(1,)]
        assert count(conn, "ticker") == 0


# --- natural keys ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("table", "make_row"),
    [
        ("ticker", lambda: futures_ticker(TODAY)),
        ("ticker", lambda: spot_ticker(TODAY)),
        ("trades", lambda: futures_trade(TODAY)),
        ("trades", lambda: spot_trade(TODAY)),
        ("anomalies", lambda: anomaly(TODAY)),
        ("quality_events", dead_letter_event),
    ],
    ids=["futures-ticker", "spot-ticker", "futures-trade", "spot-trade", "anomaly", "quality"],
)
def test_the_same_row_written_twice_is_one_row(
    db: Connection, table: str, make_row: Callable[[], dict[str, Any]]
) -> None:
    ensure_partitions(db, "ticker", [TODAY])
    ensure_partitions(db, "trades", [TODAY])

    assert [insert(db, table, make_row()), insert(db, table, make_row())] == [1, 0]
    assert count(db, table) == 1


def test_the_generated_keys_are_the_contract_keys(db: Connection) -> None:
    ensure_partitions(db, "ticker", [TODAY])
    ensure_partitions(db, "trades", [TODAY])
    futures, spot = futures_ticker(TODAY), spot_ticker(TODAY)
    insert(db, "ticker", futures)
    insert(db, "ticker", spot)
    insert(db, "trades", futures_trade(TODAY, seq=41))
    insert(db, "trades", spot_trade(TODAY))

    assert db.execute("SELECT time_key FROM ticker ORDER BY source").fetchall() == [
        (futures["exchange_time_ms"],),
        (spot["received_time_ns"],),
    ]
    assert db.execute("SELECT trade_key FROM trades ORDER BY source").fetchall() == [
        (41,),
        (9_000_001,),
    ]


def test_a_row_whose_event_time_is_not_its_kafka_timestamp_is_refused(db: Connection) -> None:
    ensure_partitions(db, "ticker", [TODAY])
    ensure_partitions(db, "trades", [TODAY])
    ticker = {**futures_ticker(TODAY), "event_time_ms": futures_ticker(TODAY)["event_time_ms"] + 1}
    trade = {**spot_trade(TODAY), "event_time_ms": spot_trade(TODAY)["event_time_ms"] - 1}

    with pytest.raises(psycopg.errors.CheckViolation, match="event_time_ms_is_the_kafka"):
        insert(db, "ticker", ticker)
    with pytest.raises(psycopg.errors.CheckViolation, match="event_time_ms_is_the_kafka"):
        insert(db, "trades", trade)


# --- day partitions -------------------------------------------------------------


def test_a_day_partition_spans_the_utc_day_in_epoch_milliseconds() -> None:
    lower, upper = day_bounds_ms(TODAY)
    assert (lower, upper) == (1_795_219_200_000, 1_795_305_600_000)
    assert [partition_day(lower), partition_day(upper - 1), partition_day(upper)] == [
        TODAY,
        TODAY,
        TODAY + timedelta(days=1),
    ]


def test_a_row_for_a_day_without_a_partition_fails_until_the_partition_is_ensured(
    db: Connection,
) -> None:
    old_day = date(2024, 2, 29)
    with pytest.raises(psycopg.errors.CheckViolation, match="no partition of relation"):
        insert(db, "trades", futures_trade(old_day))

    assert ensure_partitions(db, "trades", [old_day]) == ["trades_p20240229"]

    assert insert(db, "trades", futures_trade(old_day)) == 1
    assert partition_names(db, "trades") == ["trades_p20240229"]
    assert partition_names(db, "ticker") == []


def test_ensuring_the_same_days_again_creates_nothing(db: Connection) -> None:
    wanted = [TODAY, TODAY - timedelta(days=1), TODAY]

    assert ensure_partitions(db, "ticker", wanted) == ["ticker_p20261120", "ticker_p20261121"]
    assert ensure_partitions(db, "ticker", wanted) == []
    assert ensure_partitions(db, "ticker", []) == []
    assert partition_names(db, "ticker") == ["ticker_p20261120", "ticker_p20261121"]


def test_writers_that_meet_at_the_partition_lock_create_each_partition_once(
    db: Connection, postgres_url: str
) -> None:
    wanted = days(TODAY, TODAY + timedelta(days=2))

    def writer() -> list[str]:
        with connect(postgres_url) as conn:
            return ensure_partitions(conn, "trades", wanted)

    futures = run_while_holding(postgres_url, _PARTITION_LOCK, [writer, writer], waiters=2)

    expected = ["trades_p20261121", "trades_p20261122", "trades_p20261123"]
    assert sorted(f.result() for f in futures) == [[], expected]
    assert partition_names(db, "trades") == expected


def test_create_ahead_creates_today_through_n_days_ahead_for_both_tables(db: Connection) -> None:
    assert create_ahead(db, TODAY, 2) == [
        "ticker_p20261121", "ticker_p20261122", "ticker_p20261123",
        "trades_p20261121", "trades_p20261122", "trades_p20261123",
    ]  # fmt: skip
    assert create_ahead(db, TODAY, 3) == ["ticker_p20261124", "trades_p20261124"]
    assert create_ahead(db, TODAY, 0) == []


def test_drop_expired_drops_exactly_the_days_older_than_the_retention(db: Connection) -> None:
    all_days = days(TODAY - timedelta(days=4), TODAY + timedelta(days=1))
    ensure_partitions(db, "ticker", all_days)
    ensure_partitions(db, "trades", all_days)
    for day in all_days:
        insert(db, "ticker", futures_ticker(day, offset_ms=1))
        insert(db, "ticker", spot_ticker(day, offset_ms=86_399_998))
        insert(db, "trades", futures_trade(day))

    dropped = drop_expired(db, retention_days=2, today=TODAY)

    assert dropped == [
        "ticker_p20261117", "ticker_p20261118", "trades_p20261117", "trades_p20261118",
    ]  # fmt: skip
    kept = days(TODAY - timedelta(days=2), TODAY + timedelta(days=1))
    assert partition_names(db, "ticker") == [f"ticker_p{d:%Y%m%d}" for d in kept]
    assert partition_names(db, "trades") == [f"trades_p{d:%Y%m%d}" for d in kept]
    assert [count(db, "ticker", d) for d in kept] == [2, 2, 2, 2]
    assert [count(db, "trades", d) for d in kept] == [1, 1, 1, 1]
    assert (count(db, "ticker"), count(db, "trades")) == (8, 4)
    assert drop_expired(db, retention_days=2, today=TODAY) == []


@pytest.mark.parametrize("retention_days", [0, -3])
def test_a_retention_shorter_than_a_day_is_refused(db: Connection, retention_days: int) -> None:
    create_ahead(db, TODAY, 0)
    with pytest.raises(
        ValueError, match=f"retention_days must be at least 1, got {retention_days}"
    ):
        drop_expired(db, retention_days, TODAY)
    assert len(existing_partitions(db, "ticker")) == 1


def test_partition_upkeep_refuses_to_run_inside_the_callers_transaction(db: Connection) -> None:
    with db.transaction(), pytest.raises(RuntimeError, match="outside a transaction"):
        ensure_partitions(db, "ticker", [TODAY])
    with pytest.raises(ValueError, match="'anomalies' is not partitioned by day"):
        ensure_partitions(db, "anomalies", [TODAY])


# --- connecting -----------------------------------------------------------------


@pytest.fixture
def no_libpq_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("PGHOST", "PGPORT", "PGDATABASE", "PGUSER", "PGPASSWORD", "PGSERVICE"):
        monkeypatch.delenv(variable, raising=False)


def _assert_hidden(error: BaseException, secret: str) -> None:
    logged = "".join(traceback.format_exception(error))
    assert secret not in logged, logged
    assert secret not in repr(error)


@pytest.mark.usefixtures("no_libpq_env")
def test_a_refused_connection_names_the_server_but_not_the_password() -> None:
    port = free_port()
    with pytest.raises(StoreConnectionError) as raised:
        connect(f"postgresql://u:{SECRET}@127.0.0.1:{port}/db")

    message = str(raised.value)
    assert f"host=127.0.0.1 port={port} dbname=db user=u password=***" in message
    assert "Connection refused" in message
    _assert_hidden(raised.value, SECRET)


@pytest.mark.usefixtures("no_libpq_env")
@pytest.mark.parametrize(
    ("conninfo", "spellings"),
    [
        (f"postgresql://u:{SECRET}@[::1/db", [SECRET]),
        ("postgresql://u:p%40ss%2Fw0rd@[::1/db", ["p%40ss%2Fw0rd", "p@ss/w0rd"]),
        (f"host=127.0.0.1 password='{SECRET}", [SECRET]),
    ],
    ids=["url", "percent-encoded-url", "key-value"],
)
def test_a_malformed_connection_string_is_reported_without_its_password(
    conninfo: str, spellings: list[str]
) -> None:
    with pytest.raises(StoreConnectionError) as raised:
        connect(conninfo)

    assert "at a malformed connection string" in str(raised.value)
    for spelling in spellings:
        _assert_hidden(raised.value, spelling)


@pytest.mark.usefixtures("no_libpq_env")
def test_libpq_itself_echoes_a_malformed_url_with_its_password() -> None:
    """Why connect() masks: psycopg's own error would have leaked it."""
    with pytest.raises(psycopg.ProgrammingError, match=SECRET):
        psycopg.connect(f"postgresql://u:{SECRET}@[::1/db")


def test_an_empty_connection_string_reads_the_cloudnativepg_secret_variables(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch, no_libpq_env: None
) -> None:
    given = psycopg.conninfo.conninfo_to_dict(postgres_url)
    for option, variable in [("host", "PGHOST"), ("port", "PGPORT"), ("dbname", "PGDATABASE")]:
        monkeypatch.setenv(variable, str(given[option]))
    monkeypatch.setenv("PGUSER", str(given["user"]))
    monkeypatch.setenv("PGPASSWORD", SECRET)  # trust authentication ignores it

    with connect() as conn:
        assert conn.autocommit
        assert conn.execute("SELECT current_database()").fetchone() == (given["dbname"],)
        assert conn.info.parameter_status("application_name") == "krakenfeed"

    monkeypatch.setenv("PGPORT", str(free_port()))
    with pytest.raises(StoreConnectionError) as raised:
        connect()
    assert "password=***" in str(raised.value)
    _assert_hidden(raised.value, SECRET)


@pytest.mark.usefixtures("no_libpq_env")
def test_describe_conninfo_shows_where_but_never_the_password() -> None:
    assert (
        describe_conninfo(f"postgresql://app:{SECRET}@db-rw.ns:5432/app?sslmode=require")
        == "host=db-rw.ns port=5432 dbname=app user=app password=***"
    )
    assert (
        describe_conninfo(f"host=db-rw port=5433 user=app password={SECRET}")
        == "host=db-rw port=5433 user=app password=***"
    )
    assert describe_conninfo("") == "the libpq defaults"


def test_a_partition_is_created_while_other_sessions_read_and_write_the_table(
    db: Connection, postgres_url: str
) -> None:
    ensure_partitions(db, "ticker", [TODAY])
    with connect(postgres_url) as other, other.transaction():
        insert(other, "ticker", futures_ticker(TODAY))
        count(other, "ticker")
        # Waiting for the open transaction would fail here instead of hanging.
        db.execute("SET lock_timeout = '2s'")

        assert ensure_partitions(db, "ticker", [TODAY + timedelta(days=1)]) == ["ticker_p20261122"]
        assert insert(db, "ticker", futures_ticker(TODAY + timedelta(days=1))) == 1
