"""The Kafka adapter: Applications, contract topics and record production.

Every krakenfeed process talks to Kafka through a quixstreams ``Application``
configured here, so producer durability and topic settings live in one place.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import Any

with warnings.catch_warnings():
    # quixstreams imports authlib's httpx client (for Quix Cloud, unused here), which
    # installs an "always" filter and warns on import; keep both out of our processes.
    warnings.simplefilter("ignore")
    from quixstreams import Application
    from quixstreams.kafka import Producer
    from quixstreams.models import Topic, TopicConfig
    from quixstreams.sinks import BatchingSink, SinkBatch

from krakenfeed.contracts import (
    TOPIC_CONFIG,
    FeedId,
    Stream,
    encode_record,
    record_key,
    record_timestamp_ms,
    topic,
)
from krakenfeed.contracts.records import AnyRecord

__all__ = [
    "PRODUCER_CONFIG",
    "Application",
    "BatchingSink",
    "Producer",
    "SinkBatch",
    "contract_topic",
    "make_application",
    "produce_records",
]

PRODUCER_CONFIG: dict[str, Any] = {
    "acks": "all",
    "enable.idempotence": True,
    "linger.ms": 5,
    "compression.type": "lz4",
}


def make_application(broker: str, **kwargs: Any) -> Application:
    """An Application with krakenfeed's producer durability settings."""
    extra = {**PRODUCER_CONFIG, **kwargs.pop("producer_extra_config", {})}
    kwargs.setdefault("loglevel", "WARNING")
    return Application(broker_address=broker, producer_extra_config=extra, **kwargs)


def contract_topic(app: Application, feed: FeedId, stream: Stream, partitions: int = 1) -> Topic:
    """Declare (and create when missing) a feed topic with explicit retention.

    Values stay raw bytes: krakenfeed decodes them with msgspec against the
    contract structs instead of quixstreams' generic JSON deserializer.
    """
    return app.topic(
        topic(feed, stream),
        value_deserializer="bytes",
        value_serializer="bytes",
        key_deserializer="str",
        config=TopicConfig(
            num_partitions=partitions, replication_factor=1, extra_config=dict(TOPIC_CONFIG)
        ),
    )


def produce_records(producer: Producer, topic_name: str, records: Iterable[AnyRecord]) -> int:
    """Produce contract records with the contract's key and timestamp; returns the count."""
    count = 0
    for record in records:
        producer.produce(
            topic_name,
            value=encode_record(record),
            key=record_key(record),
            timestamp=record_timestamp_ms(record),
        )
        count += 1
    return count
