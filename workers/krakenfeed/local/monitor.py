"""Watches a running feed through its Kafka topics, as any other reader would.

It reads every topic of the feed from the beginning (committing nothing, so it
changes nothing) and asks the broker for the detector group's committed offsets to
tell how far the detector is behind. The end of a topic is the larger of the
broker's high watermark and the offset after the last record read here: Tansu
reports the high watermark as the last batch's base offset + 1, not the end of
that batch.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from krakenfeed.contracts import (
    Anomaly,
    DeadLetter,
    FeedId,
    QualityEvent,
    QualityKind,
    Stream,
    consumer_group,
    decode_record,
    topic,
)

DETECTOR_INPUTS = (Stream.TICKER, Stream.TRADE, Stream.DLQ, Stream.QUALITY)
_RATE_WINDOW_S = 5.0


@dataclass
class ProductActivity:
    frames: int = 0
    last_seen: float | None = None
    arrivals: deque[tuple[float, int]] = field(default_factory=deque)

    def rate(self, now: float) -> float:
        while self.arrivals and self.arrivals[0][0] < now - _RATE_WINDOW_S:
            self.arrivals.popleft()
        return sum(n for _, n in self.arrivals) / _RATE_WINDOW_S


class FeedMonitor:
    def __init__(
        self,
        broker: str,
        feed: FeedId,
        clock: Callable[[], float] = time.monotonic,
        *,
        from_start: bool = True,
    ) -> None:
        """``from_start``: read the topics' history too (a fresh embedded broker has
        none); otherwise only what arrives from now on (on Tansu, from inside its
        last batch, given its high watermark)."""
        self._clock = clock
        self._topics = {topic(feed, stream): stream for stream in Stream}
        common = {"bootstrap.servers": broker, "enable.auto.commit": False}
        self._reader = Consumer({**common, "group.id": f"{consumer_group(feed)}.monitor"})
        # Never subscribes, so it never joins the detector's group: it only reads
        # the group's committed offsets.
        self._offsets = Consumer({**common, "group.id": consumer_group(feed)})
        self._reader.assign(
            [
                TopicPartition(name, 0, OFFSET_BEGINNING if from_start else self._end(name))
                for name in self._topics
            ]
        )
        self._inputs = [TopicPartition(topic(feed, s), 0) for s in DETECTOR_INPUTS]
        self._read_to: dict[str, int] = {}
        """Per topic, the offset after the last record read."""
        self.products: dict[str, ProductActivity] = {}
        self.anomalies_by_detector: Counter[str] = Counter()
        self.quality: Counter[tuple[str, str]] = Counter()
        """(source, kind) → count, dead letters included."""
        self.market_records = 0

    def poll(self, timeout: float = 0.05) -> list[Anomaly]:
        """Read what arrived; returns the anomalies among it, oldest first."""
        now = self._clock()
        fresh: list[Anomaly] = []
        arrived: Counter[str] = Counter()
        for message in self._reader.consume(num_messages=5000, timeout=timeout):
            if message.error():
                continue
            stream = self._topics.get(message.topic())
            self._read_to[message.topic()] = message.offset() + 1
            value = message.value() or b""
            if stream in (Stream.TICKER, Stream.TRADE):
                key = message.key()
                arrived[key.decode() if key else "?"] += 1
            elif stream is Stream.ANOMALIES:
                try:
                    anomaly = decode_record(value, Anomaly)
                except msgspec.DecodeError:
                    continue
                self.anomalies_by_detector[anomaly.detector] += 1
                fresh.append(anomaly)
            elif stream is Stream.QUALITY:
                try:
                    event = decode_record(value, QualityEvent)
                except msgspec.DecodeError:
                    continue
                self.quality[(event.source, event.kind.value)] += 1
            elif stream is Stream.DLQ:
                try:
                    source = decode_record(value, DeadLetter).source or "unknown"
                except msgspec.DecodeError:
                    source = "unknown"
                self.quality[(source, QualityKind.DEAD_LETTER.value)] += 1
        for product, count in arrived.items():
            activity = self.products.setdefault(product, ProductActivity())
            activity.frames += count
            activity.last_seen = now
            activity.arrivals.append((now, count))
            self.market_records += count
        return fresh

    def _end(self, name: str) -> int:
        _, high = self._offsets.get_watermark_offsets(
            TopicPartition(name, 0), timeout=5, cached=False
        )
        return int(high)

    def frames_seen(self) -> int:
        """Market records and dead letters read: each stands for at least one frame."""
        dead_letters = sum(
            n for (_, kind), n in self.quality.items() if kind == QualityKind.DEAD_LETTER
        )
        return self.market_records + dead_letters

    def detector_lag(self) -> tuple[int, int]:
        """(records the detector has not committed yet, records on its input topics)."""
        committed = self._offsets.committed(self._inputs, timeout=5)
        lag = total = 0
        for partition in committed:
            low, high = self._offsets.get_watermark_offsets(partition, timeout=5, cached=False)
            end = max(high, self._read_to.get(partition.topic, 0))
            total += end - low
            done = partition.offset if partition.offset >= 0 else low
            lag += max(0, end - done)
        return lag, total

    def close(self) -> None:
        self._reader.close()
        self._offsets.close()
