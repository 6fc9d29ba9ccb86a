"""The PostgreSQL adapter: schema migrations and the upserting sink."""

from krakenfeed.store.migrate import migrate
from krakenfeed.store.sink import PostgresSink

__all__ = ["PostgresSink", "migrate"]
