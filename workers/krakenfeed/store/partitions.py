"""The UTC-day partitions of ``ticker`` and ``trades``: created ahead and on
demand, dropped after the retention.

Every change runs in its own transaction under one advisory lock, so writers and
the retention job may call these functions at the same moment. That is also why
they refuse a connection that is inside a transaction: the locks they take must
be released as soon as they return, not when the caller's write commits.

A partition is created as a plain table and then attached, because ``ATTACH
PARTITION`` needs only a SHARE UPDATE EXCLUSIVE lock on the parent, which neither
blocks nor waits for readers and writers; ``CREATE TABLE … PARTITION OF`` would
take ACCESS EXCLUSIVE and queue every writer behind any long query.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, Final

import psycopg
from psycopg import pq, sql

log = logging.getLogger(__name__)

PARTITIONED_TABLES: Final = ("ticker", "trades")

_EPOCH: Final = date(1970, 1, 1)
_DAY_MS: Final = 86_400_000
# Any constant works; it differs from the migration lock so that partition upkeep
# never waits for a migration in another database of the same server.
_PARTITION_LOCK: Final = 0x6B72616B7074  # "krakpt"
# Dropping a partition needs ACCESS EXCLUSIVE on the parent. Behind a long query
# that request would stall every writer, so retention gives up instead and the
# next run tries again.
_RETENTION_LOCK_TIMEOUT: Final = "5s"
_RANGE_BOUND: Final = re.compile(r"FOR VALUES FROM \('(-?\d+)'\) TO \('(-?\d+)'\)")

Connection = psycopg.Connection[tuple[Any, ...]]


@dataclass(frozen=True)
class Partition:
    """One range partition as the catalog describes it: ``[lower_ms, upper_ms)``."""

    name: str
    schema: str
    lower_ms: int
    upper_ms: int

    def covers(self, day: date) -> bool:
        lower, upper = day_bounds_ms(day)
        return self.lower_ms <= lower and upper <= self.upper_ms


def partition_day(event_time_ms: int) -> date:
    """The UTC day whose partition holds a row with this ``event_time_ms``."""
    return _EPOCH + timedelta(days=event_time_ms // _DAY_MS)


def day_bounds_ms(day: date) -> tuple[int, int]:
    """``[day 00:00 UTC, next day 00:00 UTC)`` in epoch milliseconds."""
    lower = (day - _EPOCH).days * _DAY_MS
    return lower, lower + _DAY_MS


def partition_name(table: str, day: date) -> str:
    return f"{table}_p{day:%Y%m%d}"


def existing_partitions(conn: Connection, table: str) -> list[Partition]:
    """The range partitions of ``table`` in bound order, read from the catalog.

    A default or MINVALUE/MAXVALUE partition is left out: krakenfeed never creates
    one, and retention must not drop what it did not make.
    """
    _parent_schema(conn, table)
    rows = conn.execute(
        "SELECT c.relname, n.nspname, pg_get_expr(c.relpartbound, c.oid)"
        " FROM pg_inherits i"
        " JOIN pg_class c ON c.oid = i.inhrelid"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE i.inhparent = to_regclass(%s)",
        (table,),
    ).fetchall()
    found = []
    for name, schema, bound in rows:
        match = _RANGE_BOUND.fullmatch(bound)
        if match:
            found.append(Partition(name, schema, int(match[1]), int(match[2])))
    return sorted(found, key=lambda p: p.lower_ms)


def ensure_partitions(conn: Connection, table: str, days: Iterable[date]) -> list[str]:
    """Create the missing day partitions of ``table`` for ``days``; returns the names created.

    Idempotent, and safe when several processes ask for the same days at once.
    """
    wanted = sorted(set(days))
    _require_idle(conn, "ensure_partitions")
    with conn.transaction():
        if not _missing(existing_partitions(conn, table), wanted):
            return []
    created = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_PARTITION_LOCK,))
        # Another process may have created some while this one waited for the lock.
        missing = _missing(existing_partitions(conn, table), wanted)
        schema = _parent_schema(conn, table)
        parent = sql.Identifier(schema, table)
        for day in missing:
            name = partition_name(table, day)
            child = sql.Identifier(schema, name)
            lower, upper = day_bounds_ms(day)
            conn.execute(
                sql.SQL("CREATE TABLE {child} (LIKE {parent} INCLUDING ALL)").format(
                    child=child, parent=parent
                )
            )
            conn.execute(
                sql.SQL(
                    "ALTER TABLE {parent} ATTACH PARTITION {child}"
                    " FOR VALUES FROM ({lower}) TO ({upper})"
                ).format(
                    parent=parent, child=child, lower=sql.Literal(lower), upper=sql.Literal(upper)
                )
            )
            created.append(name)
    if created:
        log.info("created partitions: %s", ", ".join(created))
    return created


def create_ahead(conn: Connection, today: date, days_ahead: int) -> list[str]:
    """Make sure ``today`` and the ``days_ahead`` days after it have their partitions
    in every partitioned table; returns the names created."""
    if days_ahead < 0:
        raise ValueError(
            f"days_ahead must be 0 or more, got {days_ahead}: it counts the days after "
            "today whose partitions are created in advance"
        )
    days = [today + timedelta(days=offset) for offset in range(days_ahead + 1)]
    created = []
    for table in PARTITIONED_TABLES:
        created += ensure_partitions(conn, table, days)
    return created


def drop_expired(conn: Connection, retention_days: int, today: date) -> list[str]:
    """Drop the partitions of every partitioned table whose whole UTC day is older
    than ``retention_days`` on every instant of ``today``; returns the names dropped.

    ``today`` and the ``retention_days`` days before it are kept, so today's and
    future partitions are never touched. Raises ``psycopg.errors.LockNotAvailable``
    when a long query keeps a table busy for longer than the lock timeout; nothing
    is dropped then, and the next run tries again.
    """
    if retention_days < 1:
        raise ValueError(
            f"retention_days must be at least 1, got {retention_days}: a retention "
            "shorter than a day would drop the partition that is being written today"
        )
    cutoff_ms, _ = day_bounds_ms(today - timedelta(days=retention_days))
    _require_idle(conn, "drop_expired")
    dropped = []
    with conn.transaction():
        conn.execute("SELECT set_config('lock_timeout', %s, true)", (_RETENTION_LOCK_TIMEOUT,))
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_PARTITION_LOCK,))
        for table in PARTITIONED_TABLES:
            for partition in existing_partitions(conn, table):
                if partition.upper_ms <= cutoff_ms:
                    conn.execute(
                        sql.SQL("DROP TABLE {}").format(
                            sql.Identifier(partition.schema, partition.name)
                        )
                    )
                    dropped.append(partition.name)
    if dropped:
        log.info("dropped expired partitions: %s", ", ".join(dropped))
    return dropped


def _missing(partitions: list[Partition], days: list[date]) -> list[date]:
    return [day for day in days if not any(p.covers(day) for p in partitions)]


def _parent_schema(conn: Connection, table: str) -> str:
    if table not in PARTITIONED_TABLES:
        raise ValueError(
            f"{table!r} is not partitioned by day; the partitioned tables are "
            f"{', '.join(PARTITIONED_TABLES)}"
        )
    row = conn.execute(
        "SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE c.oid = to_regclass(%s) AND c.relkind = 'p'",
        (table,),
    ).fetchone()
    if row is None:
        raise LookupError(
            f"there is no partitioned table {table!r} on the search path: apply the "
            "schema migrations (krakenfeed.store.migrate) first"
        )
    schema: str = row[0]
    return schema


def _require_idle(conn: Connection, caller: str) -> None:
    status = conn.info.transaction_status
    if status != pq.TransactionStatus.IDLE:
        raise RuntimeError(
            f"{caller} must run outside a transaction, but the connection is "
            f"{status.name}: call it before the write transaction, or on an autocommit "
            "connection, so that its locks are released when it returns"
        )
