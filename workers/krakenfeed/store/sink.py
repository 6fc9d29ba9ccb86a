"""A quixstreams ``BatchingSink`` that upserts contract records into PostgreSQL.

Each checkpoint's batch is COPYed into a session-local staging table and moved
with ``INSERT … ON CONFLICT DO NOTHING`` on the contract's natural keys, in one
transaction. A failed write raises, so quixstreams aborts the checkpoint and
does not commit offsets past rows that were never written.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from krakenfeed.contracts import TICKER, TRADES, FeedId, Stream, TableKey, Ticker, Trade, topic
from krakenfeed.contracts.records import R, decode_record
from krakenfeed.kafka import BatchingSink, SinkBatch
from krakenfeed.store.migrate import migrate

log = logging.getLogger(__name__)

Row = tuple[Any, ...]

_TICKER_FIELDS = (
    "source", "exchange_time_ms", "received_time_ns", "bid", "ask", "bid_size",
    "ask_size", "last", "volume", "mark_price", "index_price", "premium",
    "funding_rate", "relative_funding_rate", "open_interest",
)  # fmt: skip
_TRADE_FIELDS = (
    "source", "exchange_time_ms", "received_time_ns", "side", "price", "qty",
    "trade_id", "seq", "uid",
)  # fmt: skip


@dataclass(frozen=True)
class _Target:
    """How one stream's records become rows of one table."""

    table: TableKey
    columns: tuple[str, ...]
    to_row: Callable[[str, bytes], Row]


def _row_builder(kind: type[R], fields: Sequence[str]) -> Callable[[str, bytes], Row]:
    def to_row(feed: str, value: bytes) -> Row:
        record: R = decode_record(value, kind)
        return (feed, record.product, *(getattr(record, name) for name in fields))

    return to_row


_TARGETS: dict[Stream, _Target] = {
    Stream.TICKER: _Target(
        TICKER, ("feed", "product", *_TICKER_FIELDS), _row_builder(Ticker, _TICKER_FIELDS)
    ),
    Stream.TRADE: _Target(
        TRADES, ("feed", "product", *_TRADE_FIELDS), _row_builder(Trade, _TRADE_FIELDS)
    ),
}


class PostgresSink(BatchingSink):
    """Upserts one feed's ticker and trade records into their tables."""

    def __init__(self, feed: FeedId, conninfo: str = "") -> None:
        super().__init__()
        self._feed = feed
        self._feed_label = str(feed)
        self._conninfo = conninfo
        self._conn: psycopg.Connection[tuple[Any, ...]] | None = None
        self._targets = {topic(feed, stream): target for stream, target in _TARGETS.items()}
        self.rows_inserted = 0

    def setup(self) -> None:
        self._connection()

    def _connection(self) -> psycopg.Connection[tuple[Any, ...]]:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self._conninfo, autocommit=True)
            migrate(self._conn)
        return self._conn

    def write(self, batch: SinkBatch) -> None:
        target = self._targets.get(batch.topic)
        if target is None:
            raise ValueError(f"PostgresSink for {self._feed} got a batch from topic {batch.topic}")
        rows = [target.to_row(self._feed_label, item.value) for item in batch]
        try:
            self.rows_inserted += self._upsert(target, rows)
        except psycopg.OperationalError:
            # The connection is unusable; the next write reconnects. Raising aborts
            # the checkpoint so the offsets of these rows are not committed.
            if self._conn is not None:
                self._conn.close()
            raise

    def _upsert(self, target: _Target, rows: list[Row]) -> int:
        conn = self._connection()
        table = sql.Identifier(target.table.table)
        stage = sql.Identifier(f"stage_{target.table.table}")
        columns = sql.SQL(", ").join(map(sql.Identifier, target.columns))
        with conn.transaction():
            conn.execute(
                sql.SQL(
                    "CREATE TEMP TABLE IF NOT EXISTS {stage} ON COMMIT DELETE ROWS"
                    " AS SELECT {columns} FROM {table} WITH NO DATA"
                ).format(stage=stage, columns=columns, table=table)
            )
            with conn.cursor() as cursor:
                with cursor.copy(
                    sql.SQL("COPY {stage} ({columns}) FROM STDIN").format(
                        stage=stage, columns=columns
                    )
                ) as copy:
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
                        key=sql.SQL(", ").join(map(sql.Identifier, target.table.key)),
                    )
                )
                return cursor.rowcount

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


__all__ = ["PostgresSink"]
