"""The Kafka adapter: Applications, contract topics and record production.

Every krakenfeed process talks to Kafka through a quixstreams ``Application``
configured here, so producer durability and topic settings live in one place.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

with warnings.catch_warnings():
    # quixstreams imports authlib's httpx client (for Quix Cloud, unused here), which
    # installs an "always" filter for its deprecation warnings and then warns on import.
    # Let authlib install its filter first, then put ours in front of it.
    import authlib.deprecate

    warnings.filterwarnings("ignore", category=authlib.deprecate.AuthlibDeprecationWarning)
    from quixstreams import Application, message_context
    from quixstreams.app import ProcessingGuarantee
    from quixstreams.dataframe import StreamingDataFrame
    from quixstreams.kafka import Producer
    from quixstreams.models import HeadersTuples, Topic, TopicConfig
    from quixstreams.sinks import BaseSink, BatchingSink, SinkBackpressureError, SinkBatch

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
    "BaseSink",
    "BatchingSink",
    "HeadersTuples",
    "ProcessingGuarantee",
    "Producer",
    "SinkBackpressureError",
    "SinkBatch",
    "StreamingDataFrame",
    "StreamingProducer",
    "Topic",
    "broker_check",
    "client_closed",
    "contract_topics",
    "make_application",
    "message_context",
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
    if "loglevel" not in kwargs:
        # quixstreams (and librdkafka through it) then log through the process's own
        # handler, as JSON lines like every other line; warnings and worse only.
        kwargs["loglevel"] = None
        logging.getLogger("quixstreams").setLevel(logging.WARNING)
    return Application(broker_address=broker, producer_extra_config=extra, **kwargs)


def contract_topics(
    app: Application, broker: str, feed: FeedId, streams: Sequence[Stream], partitions: int = 1
) -> dict[Stream, Topic]:
    """Declare a feed's topics, creating the missing ones with explicit retention.

    Creation is one batched admin request: quixstreams creates topics one at a
    time and waits about a second for each. Values stay raw bytes: krakenfeed
    decodes them with msgspec against the contract structs.
    """
    admin = AdminClient({"bootstrap.servers": broker})
    requests = [
        NewTopic(topic(feed, stream), partitions, 1, config=dict(TOPIC_CONFIG))
        for stream in streams
    ]
    for future in admin.create_topics(requests, operation_timeout=30).values():
        try:
            future.result()
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    return {
        stream: app.topic(
            topic(feed, stream),
            value_deserializer="bytes",
            value_serializer="bytes",
            key_deserializer="str",
            key_serializer="str",
            config=TopicConfig(
                num_partitions=partitions, replication_factor=1, extra_config=dict(TOPIC_CONFIG)
            ),
        )
        for stream in streams
    }


def client_closed(exc: BaseException) -> bool:
    """Whether ``exc`` says the Kafka client it came from was closed: confluent-kafka
    raises RuntimeError, or KafkaException(_DESTROY) while the close is under way."""
    if isinstance(exc, RuntimeError):
        return True
    return (
        isinstance(exc, KafkaException)
        and isinstance(exc.args[0], KafkaError)
        and exc.args[0].code() == KafkaError._DESTROY
    )


def broker_check(broker: str, timeout_s: float = 2.0) -> Callable[[], None]:
    """A metadata request on a client of its own: raises unless the cluster answers
    within ``timeout_s``. For readiness probes, never for the data path."""
    admin = AdminClient({"bootstrap.servers": broker})

    def check() -> None:
        admin.list_topics(timeout=timeout_s)

    return check


def end_offsets(
    broker: str, timeout_s: float = 2.0
) -> Callable[[Iterable[tuple[str, int]]], dict[tuple[str, int], int]]:
    """Each partition's end (high watermark) as the broker says now, on a client of
    its own: for health checks, never for the data path."""
    client = Consumer({"bootstrap.servers": broker, "group.id": "krakenfeed-end-offsets"})

    def ends(partitions: Iterable[tuple[str, int]]) -> dict[tuple[str, int], int]:
        found: dict[tuple[str, int], int] = {}
        for topic_name, partition in partitions:
            _, high = client.get_watermark_offsets(
                TopicPartition(topic_name, partition), timeout=timeout_s, cached=False
            )
            found[(topic_name, partition)] = high
        return found

    return ends


class StreamingProducer(Producer):
    """The Application's producer, for a hot loop that polls librdkafka itself.

    quixstreams' ``Producer.produce`` polls after every message to serve delivery
    callbacks; at ~100k messages/s that poll costs more than the produce itself.
    The loop calls :attr:`send` and :meth:`serve` every ``POLL_EVERY`` messages;
    configuration, flush and close stay the parent's.
    """

    POLL_EVERY = 1000

    def __init__(self, app: Application) -> None:
        super().__init__(
            broker_address=app.config.broker_address,
            extra_config=dict(app.config.producer_extra_config),
        )

    @property
    def send(self) -> Any:
        """librdkafka's ``produce(topic, value, key, timestamp=, on_delivery=)``."""
        return self._producer.produce

    def serve(self) -> None:
        """Serve delivery reports; when librdkafka's queue is full, wait for it to drain."""
        self._producer.poll(0)


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
