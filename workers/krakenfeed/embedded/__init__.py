"""Real servers started on this machine: Tansu (Kafka protocol) and PostgreSQL.

Used by ``krakenfeed up``, the test harness and the benchmarks alike, so that all
three exercise the same components the same way.
"""

from krakenfeed.embedded.kafka import EmbeddedKafka
from krakenfeed.embedded.net import free_port, wait_until
from krakenfeed.embedded.postgres import EmbeddedPostgres
from krakenfeed.embedded.run import run_until

__all__ = ["EmbeddedKafka", "EmbeddedPostgres", "free_port", "run_until", "wait_until"]
