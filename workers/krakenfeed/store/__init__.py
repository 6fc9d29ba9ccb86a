"""The PostgreSQL adapter: schema migrations and the upserting sink."""

from krakenfeed.store.migrate import migrate
from krakenfeed.store.sink import EncodedRecord, PostgresSink

__all__ = ["EncodedRecord", "PostgresSink", "migrate"]
