"""Read a topic back without joining a consumer group (no rebalance wait)."""

from __future__ import annotations

import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition


def read_topic(
    bootstrap: str, topic: str, count: int, timeout: float = 30.0, *, exact: bool = True
) -> list[Message]:
    """Return exactly ``count`` messages from partition 0, or fail naming what arrived.

    With ``exact=False``, return as soon as at least ``count`` have arrived."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "krakenfeed-test-reader",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    messages: list[Message] = []
    deadline = time.monotonic() + timeout
    try:
        while len(messages) < count and time.monotonic() < deadline:
            for message in consumer.consume(num_messages=count - len(messages), timeout=0.5):
                if message.error() is None:
                    messages.append(message)
        if exact:
            # Anything beyond the expected count means duplicates: look briefly for more.
            messages.extend(
                m for m in consumer.consume(num_messages=100, timeout=0.5) if not m.error()
            )
    finally:
        consumer.close()
    assert len(messages) == count or (not exact and len(messages) > count), (
        f"expected {count} messages on {topic}, got {len(messages)}"
    )
    return messages
