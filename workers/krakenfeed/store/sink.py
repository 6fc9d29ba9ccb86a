"""A quixstreams ``BatchingSink`` that upserts contract records into PostgreSQL.

Every record type has one table. Each checkpoint's batch is COPYed into
session-local staging tables and moved with ``INSERT … ON CONFLICT DO NOTHING``
on the contract's natural keys, all in one transaction. A failed write raises, so
quixstreams aborts the checkpoint and commits no offset past an unwritten row.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from krakenfeed.contracts import (
    ANOMALIES,
    QUALITY_EVENTS,
    TICKER,
    TRADES,
    Anomaly,
    DeadLetter,
    FeedId,
    QualityEvent,
    QualityKind,
    TableKey,
    Ticker,
    Trade,
    quality_event_id,
    record_timestamp_ms,
)
from krakenfeed.kafka import BatchingSink, SinkBackpressureError, SinkBatch
from krakenfeed.store.connection import StoreConnectionError, connect
from krakenfeed.store.migrate import migrate
from krakenfeed.store.partitions import (
    create_ahead,
    drop_expired,
    ensure_partitions,
    partition_day,
)

log = logging.getLogger(__name__)

Row = tuple[Any, ...]
StoredRecord = Ticker | Trade | Anomaly | DeadLetter | QualityEvent


def _ticker_row(feed: str, t: Ticker) -> Row:
    return (
        feed, t.product, t.source, record_timestamp_ms(t), t.exchange_time_ms,
        t.received_time_ns, t.bid, t.ask, t.bid_size, t.ask_size, t.last, t.volume,
        t.mark_price, t.index_price, t.premium, t.funding_rate, t.relative_funding_rate,
        t.open_interest,
    )  # fmt: skip


def _trade_row(feed: str, t: Trade) -> Row:
    return (
        feed, t.product, t.source, record_timestamp_ms(t), t.exchange_time_ms,
        t.received_time_ns, t.side, t.price, t.qty, t.trade_id, t.seq, t.uid,
    )  # fmt: skip


def _anomaly_row(feed: str, a: Anomaly) -> Row:
    return (
        feed, a.product, a.detector, a.event_time_ms, a.detected_time_ns, a.value,
        a.baseline_low, a.baseline_high, a.score, a.severity.value, Jsonb(a.context),
        a.trace_id,
    )  # fmt: skip


def _quality_row(feed: str, q: QualityEvent) -> Row:
    return (
        feed, quality_event_id(q), q.source, q.kind.value, q.product, q.exchange_time_ms,
        q.received_time_ns, q.detail, None, None, Jsonb(q.attributes),
    )  # fmt: skip


def _dead_letter_row(feed: str, d: DeadLetter) -> Row:
    attributes = {"stage": d.stage, "topic": d.topic}
    return (
        feed, quality_event_id(d), d.source or "unknown", QualityKind.DEAD_LETTER.value,
        d.product, d.exchange_time_ms, d.received_time_ns, d.detail, d.reason.value, d.raw,
        Jsonb(attributes),
    )  # fmt: skip


@dataclass(frozen=True)
class _Target:
    key: TableKey
    columns: tuple[str, ...]
    conflict: tuple[str, ...]
    """The primary key: the contract's natural key, plus the partition column."""
    partitioned: bool = False


_MARKET = ("feed", "product", "source", "event_time_ms", "exchange_time_ms", "received_time_ns")
_TICKER = _Target(
    TICKER,
    (*_MARKET, "bid", "ask", "bid_size", "ask_size", "last", "volume", "mark_price",
     "index_price", "premium", "funding_rate", "relative_funding_rate", "open_interest"),
    (*TICKER.key, "event_time_ms"),
    partitioned=True,
)  # fmt: skip
_TRADES = _Target(
    TRADES,
    (*_MARKET, "side", "price", "qty", "trade_id", "seq", "uid"),
    (*TRADES.key, "event_time_ms"),
    partitioned=True,
)
_ANOMALIES = _Target(
    ANOMALIES,
    ("feed", "product", "detector", "event_time_ms", "detected_time_ns", "value",
     "baseline_low", "baseline_high", "score", "severity", "context", "trace_id"),
    ANOMALIES.key,
)  # fmt: skip
_QUALITY = _Target(
    QUALITY_EVENTS,
    ("feed", "event_id", "source", "kind", "product", "exchange_time_ms", "received_time_ns",
     "detail", "reason", "raw", "attributes"),
    QUALITY_EVENTS.key,
)  # fmt: skip

_ROUTES: dict[type, tuple[_Target, Callable[[str, Any], Row]]] = {
    Ticker: (_TICKER, _ticker_row),
    Trade: (_TRADES, _trade_row),
    Anomaly: (_ANOMALIES, _anomaly_row),
    QualityEvent: (_QUALITY, _quality_row),
    DeadLetter: (_QUALITY, _dead_letter_row),
}


_MAINTENANCE_EVERY_MS = 3_600_000
_MAX_RETRY_S = 30.0


class PostgresSink(BatchingSink):
    """Upserts one feed's records (market data, anomalies, quality events).

    It also keeps the market tables' day partitions: ``partitions_ahead`` days are
    created in advance, and days older than ``retention_days`` are dropped, on start
    and then hourly.
    """

    def __init__(
        self,
        feed: FeedId,
        conninfo: str = "",
        *,
        retention_days: int = 30,
        partitions_ahead: int = 2,
        clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        super().__init__()
        if retention_days < 1:
            raise ValueError(f"retention_days must be at least 1, got {retention_days}")
        self._feed = str(feed)
        self._conninfo = conninfo
        self._retention_days = retention_days
        self._partitions_ahead = partitions_ahead
        self._clock_ms = clock_ms
        self._next_maintenance_ms = 0
        self._outages = 0
        self._conn: psycopg.Connection[tuple[Any, ...]] | None = None
        self._partitions: set[tuple[str, date]] = set()
        self.rows_inserted = 0
        """Rows that were new to their table."""
        self.written: Counter[str] = Counter()
        """Records whose rows are committed (new or already there), by record type."""

    def setup(self) -> None:
        self._connection()

    def _connection(self) -> psycopg.Connection[tuple[Any, ...]]:
        if self._conn is None or self._conn.closed:
            self._conn = connect(self._conninfo)
            migrate(self._conn)
        now_ms = self._clock_ms()
        if now_ms >= self._next_maintenance_ms:
            self._maintain(self._conn, partition_day(now_ms))
            self._next_maintenance_ms = now_ms + _MAINTENANCE_EVERY_MS
        return self._conn

    def _maintain(self, conn: psycopg.Connection[tuple[Any, ...]], today: date) -> None:
        create_ahead(conn, today, self._partitions_ahead)
        dropped = drop_expired(conn, self._retention_days, today)
        if dropped:
            # Forget them, so a late row for one of those days recreates it.
            self._partitions.clear()
            log.info("retention of %d days dropped %s", self._retention_days, ", ".join(dropped))

    def write(self, batch: SinkBatch) -> None:
        rows: dict[_Target, list[Row]] = {}
        kinds: Counter[str] = Counter()
        feed = self._feed
        for item in batch:
            # A step may hand over several records of one message as a list (the
            # record and its anomalies): cheaper than quixstreams' per-item expand.
            values = item.value if type(item.value) is list else (item.value,)
            for value in values:
                kind = type(value)
                target, to_row = _ROUTES[kind]
                rows.setdefault(target, []).append(to_row(feed, value))
                kinds[kind.__name__] += 1
        try:
            self.rows_inserted += self._upsert(rows)
        except (psycopg.OperationalError, StoreConnectionError) as exc:
            # PostgreSQL is unreachable. Backpressure makes quixstreams drop this batch,
            # pause, and resume from the last committed offsets: nothing is committed
            # past rows that were never written, and the replayed rows are upserts.
            if self._conn is not None:
                self._conn.close()
            self._outages += 1
            retry_after = min(_MAX_RETRY_S, 0.5 * 2 ** (self._outages - 1))
            log.warning(
                "PostgreSQL unavailable (%s); retrying in %.1fs from the last commit",
                exc,
                retry_after,
            )
            raise SinkBackpressureError(retry_after) from None
        self._outages = 0
        self.written.update(kinds)

    def _upsert(self, rows: dict[_Target, list[Row]]) -> int:
        conn = self._connection()
        # Partitions first, outside the write transaction: creating one takes a lock
        # that retention also takes, and a writer holding row locks must not wait on it.
        for target, table_rows in rows.items():
            if target.partitioned:
                self._ensure_partitions(conn, target, table_rows)
        inserted = 0
        try:
            with conn.transaction():
                for target, table_rows in rows.items():
                    inserted += _copy_and_insert(conn, target, table_rows)
        except psycopg.errors.CheckViolation:
            # Retention may have dropped a day this process still thought existed.
            self._partitions.clear()
            raise
        return inserted

    def _ensure_partitions(
        self, conn: psycopg.Connection[tuple[Any, ...]], target: _Target, rows: list[Row]
    ) -> None:
        table = target.key.table
        event_time = target.columns.index("event_time_ms")
        days = {partition_day(row[event_time]) for row in rows}
        missing = {day for day in days if (table, day) not in self._partitions}
        if missing:
            ensure_partitions(conn, table, missing)
            self._partitions.update((table, day) for day in missing)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _copy_and_insert(
    conn: psycopg.Connection[tuple[Any, ...]], target: _Target, rows: list[Row]
) -> int:
    table = sql.Identifier(target.key.table)
    stage = sql.Identifier(f"stage_{target.key.table}")
    columns = sql.SQL(", ").join(map(sql.Identifier, target.columns))
    conn.execute(
        sql.SQL(
            "CREATE TEMP TABLE IF NOT EXISTS {stage} ON COMMIT DELETE ROWS"
            " AS SELECT {columns} FROM {table} WITH NO DATA"
        ).format(stage=stage, columns=columns, table=table)
    )
    with conn.cursor() as cursor:
        copy_sql = sql.SQL("COPY {stage} ({columns}) FROM STDIN").format(
            stage=stage, columns=columns
        )
        with cursor.copy(copy_sql) as copy:
            for row in rows:
                copy.write_row(row)
        cursor.execute(
            sql.SQL(
                "INSERT INTO {table} ({columns}) SELECT {columns} FROM {stage}"
                " ON CONFLICT ({key}) DO NOTHING"
            ).format(
                table=table,
                columns=columns,
                stage=stage,
                key=sql.SQL(", ").join(map(sql.Identifier, target.conflict)),
            )
        )
        return cursor.rowcount
