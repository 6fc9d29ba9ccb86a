"""A quixstreams ``BatchingSink`` that upserts contract records into PostgreSQL.

Every record type has one table. A batch is upserted with ``INSERT … ON CONFLICT
DO NOTHING`` on the contract's natural keys, in one transaction sent as one
pipeline. Market records arrive as their contract JSON and go as one JSON array
that PostgreSQL unpacks into rows; the rare others go as rows.

Writes happen behind the stream, on one writer thread: a partition's batch is handed
over as soon as it is big or old enough, so PostgreSQL works while the
detector goes on, and the checkpoint's ``flush`` only hands over the remainders and
waits for every write. A failed write makes ``flush`` raise, so quixstreams aborts
the checkpoint and commits no offset past an unwritten row; rows already written
for that checkpoint are upserts, and writing them again when the records are
replayed changes nothing.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, Final, NamedTuple

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
from krakenfeed.kafka import BatchingSink, HeadersTuples, SinkBackpressureError, SinkBatch
from krakenfeed.store.connection import StoreConnectionError, connect
from krakenfeed.store.migrate import migrate
from krakenfeed.store.partitions import (
    create_ahead,
    drop_expired,
    ensure_partitions,
    partition_day,
)
from krakenfeed.telemetry import SpanContext, Tracing

log = logging.getLogger(__name__)

Row = tuple[Any, ...]
StoredRecord = Ticker | Trade | Anomaly | DeadLetter | QualityEvent


class EncodedRecord(NamedTuple):
    """A market record that was already validated, as its contract JSON.

    The sink sends the JSON as it is and PostgreSQL unpacks it into the row, which
    costs the detector a fraction of turning each record into a row in Python.
    The record's fields are the table's columns, by name.
    """

    kind: type[Ticker] | type[Trade]
    event_time_ms: int
    """``record_timestamp_ms`` of the record: its day decides its partition."""
    json: bytes

    @classmethod
    def of(cls, record: Ticker | Trade, json: bytes) -> EncodedRecord:
        """``record`` with ``json``, the bytes it was decoded from."""
        return cls(type(record), record_timestamp_ms(record), json)


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

    def from_json(self) -> sql.Composed:
        """The columns, read from a record's contract JSON (``r``), which has every
        column but the feed and the Kafka timestamp."""
        exprs = {
            "feed": sql.Placeholder("feed"),
            "event_time_ms": sql.SQL("COALESCE(r.exchange_time_ms, r.received_time_ns / 1000000)"),
        }
        return sql.SQL(", ").join(
            exprs.get(column, sql.SQL("r.{}").format(sql.Identifier(column)))
            for column in self.columns
        )


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


_ENCODED: dict[type, _Target] = {Ticker: _TICKER, Trade: _TRADES}

_MAINTENANCE_EVERY_MS = 3_600_000
_MAX_RETRY_S = 5.0
"""The longest pause between attempts while PostgreSQL is away: also how long the
detector may stay paused after it is back."""
_LOG_EVERY_ATTEMPTS = 10
"""During an outage, one line for the first failed attempt, then one per this many."""

DATABASE_AVAILABLE: Final = "ok"
DATABASE_UNAVAILABLE: Final = "database unavailable"


class PostgresSink(BatchingSink):
    """Upserts one feed's records (market data, anomalies, quality events).

    It also keeps the market tables' day partitions: ``partitions_ahead`` days are
    created in advance, and days older than ``retention_days`` are dropped, on start
    and then hourly.

    A partition's rows go to the writer thread (see the module docstring) once
    ``write_ahead_rows`` of them are buffered, or ``write_ahead_s`` after the first
    of them, so a checkpoint mostly finds them written: the first bound keeps a busy
    feed's batches large, the second keeps a quiet feed's checkpoints short.
    """

    def __init__(
        self,
        feed: FeedId,
        conninfo: str = "",
        *,
        retention_days: int = 30,
        partitions_ahead: int = 2,
        clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
        write_ahead_rows: int = 2_000,
        write_ahead_s: float = 0.05,
        tracing: Tracing | None = None,
    ) -> None:
        super().__init__()
        self._tracing = tracing
        if retention_days < 1:
            raise ValueError(f"retention_days must be at least 1, got {retention_days}")
        if write_ahead_rows < 1:
            raise ValueError(f"write_ahead_rows must be at least 1, got {write_ahead_rows}")
        self._write_ahead_rows = write_ahead_rows
        self._write_ahead_s = write_ahead_s
        self._pending: dict[tuple[str, int], list[Any]] = {}
        """Per topic partition: what was added since its last hand-over."""
        self._due: dict[tuple[str, int], float] = {}
        """When each partition's pending values go to the writer, whatever their number."""
        self._writer: ThreadPoolExecutor | None = None
        self._writes: list[Future[None]] = []
        self._write_error: BaseException | None = None
        """The first failure since the last flush; later writes of that checkpoint
        are skipped, as the checkpoint is going to be replayed anyway."""
        self._feed = str(feed)
        self._conninfo = conninfo
        self._retention_days = retention_days
        self._partitions_ahead = partitions_ahead
        self._clock_ms = clock_ms
        self._next_maintenance_ms = 0
        self._outages = 0
        """Failed attempts in a row: the current outage's length, in attempts."""
        self._unavailable_since: float | None = None
        self._conn: psycopg.Connection[tuple[Any, ...]] | None = None
        self._partitions: set[tuple[str, date]] = set()
        self.rows_inserted = 0
        """Rows that were new to their table."""
        self.written: Counter[str] = Counter()
        """Records whose rows are committed (new or already there), by record type."""
        self.anomalies: Counter[tuple[str, str]] = Counter()
        """Anomalies whose rows are committed, by (detector, product)."""
        self.on_batch: Callable[[int, float], None] | None = None
        """Called after each committed write with its records and seconds (metrics)."""

    @property
    def health(self) -> str:
        """``"ok"``, or ``"database unavailable"`` from the first failed attempt to
        reach PostgreSQL until a write succeeds again."""
        return DATABASE_AVAILABLE if self._unavailable_since is None else DATABASE_UNAVAILABLE

    def setup(self) -> None:
        """Connect and migrate; a database that is away at start is an outage like
        any other (the first write backpressures), not a reason to exit."""
        try:
            self._connection()
        except (psycopg.OperationalError, StoreConnectionError) as exc:
            self._unavailable(exc)

    def add(
        self,
        value: Any,
        key: Any,
        timestamp: int,
        headers: HeadersTuples,
        topic: str,
        partition: int,
        offset: int,
    ) -> None:
        """quixstreams' ``.sink()`` hands over each processed record here."""
        self.put(topic, partition, value)

    def put(self, topic: str, partition: int, value: Any) -> None:
        """Buffer ``value`` (a record, or a list of records of one message) for the
        current checkpoint of ``topic``'s ``partition``.

        A stream step may call this directly, as the detector's does: it skips the
        extra step and the per-record item that quixstreams' ``.sink()`` costs. The
        sink must then be registered with the Application's sink manager, so that
        every checkpoint flushes it.
        """
        tp = (topic, partition)
        values = self._pending.get(tp) or self._buffer(tp)
        values.append(value)
        if len(values) >= self._write_ahead_rows or time.monotonic() >= self._due[tp]:
            del self._pending[tp]
            self._hand_over(values)

    def _buffer(self, tp: tuple[str, int]) -> list[Any]:
        values: list[Any] = []
        self._pending[tp] = values
        self._due[tp] = time.monotonic() + self._write_ahead_s
        return values

    def link(self, topic: str, partition: int, span: SpanContext) -> None:
        """The span of a traced record whose rows are put next: the span of the batch
        that writes them links to it. Never hands a batch over, so it goes with them."""
        tp = (topic, partition)
        (self._pending.get(tp) or self._buffer(tp)).append(span)

    def flush(self) -> None:
        """Write everything added since the last checkpoint, or raise.

        The partitions' remainders go as one write: the checkpoint waits for one
        PostgreSQL transaction, not one per partition. The open ``process`` spans of
        traced records end here, on the stream's thread, where no record is under way."""
        if self._tracing is not None:
            self._tracing.end_processing()
        remainder = [value for values in self._pending.values() for value in values]
        self._pending.clear()
        if remainder:
            self._hand_over(remainder)
        self._wait_for_writes()
        error, self._write_error = self._write_error, None
        if error is not None:
            raise error

    def on_paused(self) -> None:
        """Another sink is backpressured: drop this checkpoint's rows, which are
        going to be replayed (and their open ``process`` spans, which end)."""
        if self._tracing is not None:
            self._tracing.end_processing()
        self._pending.clear()
        self._wait_for_writes()
        self._write_error = None

    def _hand_over(self, values: list[Any]) -> None:
        self._writes.append(self._on_writer(self._write_behind, values))

    def _on_writer(self, write: Callable[[list[Any]], None], values: list[Any]) -> Future[None]:
        """Run ``write(values)`` on the one writer thread, after the writes before it."""
        if self._writer is None:
            self._writer = ThreadPoolExecutor(1, thread_name_prefix="postgres-sink")
        return self._writer.submit(write, values)

    def _write_behind(self, values: list[Any]) -> None:
        if self._write_error is not None:
            return
        try:
            self.write_values(values)
        except BaseException as exc:  # handed to the checkpoint by flush()
            self._write_error = exc

    def _wait_for_writes(self) -> None:
        writes, self._writes = self._writes, []
        for write in writes:
            write.result()

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

    def write_now(self, records: list[Any]) -> None:
        """Write records that belong to no checkpoint (the wall-clock stale reports)
        on the writer thread, and wait; raises what the write raised."""
        self._on_writer(self.write_values, records).result()

    def write(self, batch: SinkBatch) -> None:
        self.write_values(item.value for item in batch)

    def write_values(self, items: Iterable[Any]) -> None:
        """Upsert ``items`` (records, or lists of records of one message) in one
        transaction; every write of this sink goes through here."""
        rows: dict[_Target, list[Row]] = {}
        encoded: dict[_Target, list[EncodedRecord]] = {}
        kinds: Counter[str] = Counter()
        anomalies: list[Anomaly] = []
        links: list[SpanContext] = []
        feed = self._feed
        for item in items:
            # A step may hand over several records of one message as a list (the
            # record and its anomalies): cheaper than quixstreams' per-item expand.
            values = item if type(item) is list else (item,)
            for value in values:
                kind = type(value)
                if kind is EncodedRecord:
                    encoded.setdefault(_ENCODED[value.kind], []).append(value)
                    kinds[value.kind.__name__] += 1
                    continue
                if kind is SpanContext:
                    links.append(value)
                    continue
                target, to_row = _ROUTES[kind]
                rows.setdefault(target, []).append(to_row(feed, value))
                kinds[kind.__name__] += 1
                if kind is Anomaly:
                    anomalies.append(value)
        started = time.perf_counter()
        try:
            with (
                self._tracing.writing(_table_rows(rows, encoded), links)
                if self._tracing
                else contextlib.nullcontext()
            ):
                self.rows_inserted += self._upsert(rows, encoded)
        except (psycopg.OperationalError, StoreConnectionError) as exc:
            # PostgreSQL is unreachable. Backpressure makes quixstreams drop this batch,
            # pause, and resume from the last committed offsets: nothing is committed
            # past rows that were never written, and the replayed rows are upserts.
            raise SinkBackpressureError(self._unavailable(exc)) from None
        if self._unavailable_since is not None:
            log.warning(
                "PostgreSQL available again after %.1fs (%d failed attempts); resuming",
                time.monotonic() - self._unavailable_since,
                self._outages,
            )
            self._unavailable_since = None
        self._outages = 0
        self.written.update(kinds)
        self.anomalies.update((a.detector, a.product) for a in anomalies)
        if self.on_batch is not None:
            self.on_batch(kinds.total(), time.perf_counter() - started)

    def _unavailable(self, exc: Exception) -> float:
        """Note a failed attempt to reach PostgreSQL; returns the seconds to wait
        before the next. Logs the first and then every ``_LOG_EVERY_ATTEMPTS``-th."""
        if self._conn is not None:
            self._conn.close()
        self._outages += 1
        retry_after = min(_MAX_RETRY_S, 0.5 * 2.0 ** min(self._outages - 1, 16))
        if self._unavailable_since is None:
            self._unavailable_since = time.monotonic()
            log.warning(
                "%s: PostgreSQL unreachable (%s); pausing, and retrying from the last"
                " commit with up to %.0fs between attempts",
                DATABASE_UNAVAILABLE,
                str(exc).strip(),
                _MAX_RETRY_S,
            )
        elif self._outages % _LOG_EVERY_ATTEMPTS == 0:
            log.warning(
                "%s for %.0fs (%d attempts): %s",
                DATABASE_UNAVAILABLE,
                time.monotonic() - self._unavailable_since,
                self._outages,
                str(exc).strip(),
            )
        return retry_after

    def _upsert(
        self, rows: dict[_Target, list[Row]], encoded: dict[_Target, list[EncodedRecord]]
    ) -> int:
        conn = self._connection()
        # Partitions first, outside the write transaction: creating one takes a lock
        # that retention also takes, and a writer holding row locks must not wait on it.
        for target, table_rows in rows.items():
            if target.partitioned:
                event_time = target.columns.index("event_time_ms")
                times = [row[event_time] for row in table_rows]
                self._ensure_partitions(conn, target, min(times), max(times))
        for target, records in encoded.items():
            times = [record.event_time_ms for record in records]
            self._ensure_partitions(conn, target, min(times), max(times))
        # One round trip: the writer thread waits for PostgreSQL once per batch, and
        # re-acquires the GIL from the stream's thread once.
        cursors: list[psycopg.Cursor[tuple[Any, ...]]] = []
        try:
            with conn.pipeline(), conn.transaction():
                for target, records in encoded.items():
                    cursor = conn.cursor()
                    # The records' JSON, unchanged, as one JSON array.
                    array = b"[" + b",".join(record.json for record in records) + b"]"
                    cursor.execute(
                        _INSERT_JSON[target], {"feed": self._feed, "records": array.decode()}
                    )
                    cursors.append(cursor)
                for target, table_rows in rows.items():
                    cursor = conn.cursor()
                    cursor.executemany(_INSERT_ROWS[target], table_rows)
                    cursors.append(cursor)
        except psycopg.errors.CheckViolation:
            # Retention may have dropped a day this process still thought existed.
            self._partitions.clear()
            raise
        return sum(cursor.rowcount for cursor in cursors)

    def _ensure_partitions(
        self,
        conn: psycopg.Connection[tuple[Any, ...]],
        target: _Target,
        first_ms: int,
        last_ms: int,
    ) -> None:
        """Every day from ``first_ms`` to ``last_ms`` (a batch rarely spans more than
        one or two) gets its partition, if this process has not seen it yet."""
        table = target.key.table
        first, last = partition_day(first_ms), partition_day(last_ms)
        days = {first + timedelta(days=n) for n in range((last - first).days + 1)}
        missing = {day for day in days if (table, day) not in self._partitions}
        if missing:
            ensure_partitions(conn, table, missing)
            self._partitions.update((table, day) for day in missing)

    def close(self) -> None:
        self._wait_for_writes()
        if self._writer is not None:
            self._writer.shutdown()
            self._writer = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _table_rows(
    rows: dict[_Target, list[Row]], encoded: dict[_Target, list[EncodedRecord]]
) -> Counter[str]:
    tables: Counter[str] = Counter()
    for batch in (rows, encoded):
        for target, items in batch.items():
            tables[target.key.table] += len(items)
    return tables


def _insert_rows(target: _Target) -> sql.Composed:
    return sql.SQL(
        "INSERT INTO {table} ({columns}) VALUES ({values}) ON CONFLICT ({key}) DO NOTHING"
    ).format(
        table=sql.Identifier(target.key.table),
        columns=sql.SQL(", ").join(map(sql.Identifier, target.columns)),
        values=sql.SQL(", ").join(sql.Placeholder() * len(target.columns)),
        key=sql.SQL(", ").join(map(sql.Identifier, target.conflict)),
    )


def _insert_json(target: _Target) -> sql.Composed:
    return sql.SQL(
        "INSERT INTO {table} ({columns}) SELECT {values}"
        " FROM json_populate_recordset(NULL::{table}, %(records)s::json) r"
        " ON CONFLICT ({key}) DO NOTHING"
    ).format(
        table=sql.Identifier(target.key.table),
        columns=sql.SQL(", ").join(map(sql.Identifier, target.columns)),
        values=target.from_json(),
        key=sql.SQL(", ").join(map(sql.Identifier, target.conflict)),
    )


_INSERT_ROWS: Final = {target: _insert_rows(target) for target, _ in _ROUTES.values()}
_INSERT_JSON: Final = {target: _insert_json(target) for target in _ENCODED.values()}
