"""The detector: Kafka → features → detectors → Kafka and PostgreSQL, as one
quixstreams Application.

    ticker ┐                                 ┌─▶ anomalies topic
           ├─ decode ─▶ detect (per-product ─┼─▶ dlq topic (records that broke the contract)
    trade  ┘            state in RocksDB)    └─▶ PostgreSQL: ticker, trades, anomalies
    dlq, quality ─ decode ──────────────────────▶ PostgreSQL: quality_events

quixstreams owns consuming, state, checkpoints and commits; offsets are committed
only after the sink has written every row they cover.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from krakenfeed.contracts import (
    Anomaly,
    DeadLetter,
    DeadLetterReason,
    FeedId,
    QualityEvent,
    Stream,
    Ticker,
    Trade,
    consumer_group,
    encode_record,
    record_timestamp_ms,
    topic,
)
from krakenfeed.detect import DetectorConfig, DetectorEngine, decode_state, encode_state
from krakenfeed.kafka import Application, contract_topics, make_application
from krakenfeed.store import PostgresSink

_STATE_KEY = "engine"


class Decoder:
    """Turns a Kafka value into its contract record, or a dead letter that says why not."""

    def __init__(self, feed: FeedId, stream: Stream, kind: type[Any], clock_ns: Callable[[], int]):
        self._topic = topic(feed, stream)
        self._decode = msgspec.json.Decoder(kind).decode
        self._clock_ns = clock_ns

    def __call__(self, value: bytes) -> Any:
        try:
            return self._decode(value)
        except msgspec.DecodeError as exc:
            reason = (
                DeadLetterReason.SCHEMA_MISMATCH
                if isinstance(exc, msgspec.ValidationError)
                else DeadLetterReason.MALFORMED_JSON
            )
            return DeadLetter(
                source=_source_of(value),
                received_time_ns=self._clock_ns(),
                reason=reason,
                detail=f"{self._topic}: {exc}",
                raw=value.decode("utf-8", "replace"),
                stage="detector",
                topic=self._topic,
            )


def _source_of(value: bytes) -> Any:
    for source in ("futures", "spot"):
        if f'"source":"{source}"'.encode() in value:
            return source
    return None


class Detect:
    """The stateful step: one product's engine state in, its anomalies out."""

    def __init__(self, engine: DetectorEngine, clock_ns: Callable[[], int]) -> None:
        self._engine = engine
        self._clock_ns = clock_ns

    def __call__(self, record: Ticker | Trade | DeadLetter, state: Any) -> list[Any]:
        if isinstance(record, DeadLetter):
            return [record]
        engine = self._engine
        stored = state.get_bytes(_STATE_KEY)
        product_state = engine.new_state(record.product) if stored is None else decode_state(stored)
        anomalies = engine.process(
            product_state, record, record_timestamp_ms(record), self._clock_ns()
        )
        state.set_bytes(_STATE_KEY, encode_state(product_state))
        return [record, *anomalies]


def build_detector_app(
    feed: FeedId,
    broker: str,
    conninfo: str = "",
    *,
    config: DetectorConfig | None = None,
    group: str | None = None,
    commit_interval: float = 0.5,
    state_dir: Path | None = None,
    sink: PostgresSink | None = None,
    clock_ns: Callable[[], int] = time.time_ns,
) -> tuple[Application, PostgresSink]:
    app = make_application(
        broker,
        consumer_group=group or consumer_group(feed),
        auto_offset_reset="earliest",
        commit_interval=commit_interval,
        state_dir=str(state_dir) if state_dir else None,
        consumer_extra_config={"session.timeout.ms": 6000},
    )
    topics = contract_topics(app, broker, feed, list(Stream))
    engine = DetectorEngine(feed, config)
    sink = sink or PostgresSink(feed, conninfo)

    def decoded(stream: Stream, kind: type[Any]) -> Any:
        return app.dataframe(topics[stream]).apply(Decoder(feed, stream, kind, clock_ns))

    market = decoded(Stream.TICKER, Ticker).concat(decoded(Stream.TRADE, Trade))
    outputs = market.apply(Detect(engine, clock_ns), stateful=True, expand=True)
    outputs.filter(_is(Anomaly)).apply(encode_record).to_topic(topics[Stream.ANOMALIES])
    outputs.filter(_is(DeadLetter)).apply(encode_record).to_topic(topics[Stream.DLQ])
    outputs.filter(_is_not(DeadLetter)).sink(sink)

    quality = decoded(Stream.DLQ, DeadLetter).concat(decoded(Stream.QUALITY, QualityEvent))
    quality.sink(sink)
    return app, sink


def _is(kind: type) -> Callable[[Any], bool]:
    return lambda value: type(value) is kind


def _is_not(kind: type) -> Callable[[Any], bool]:
    return lambda value: type(value) is not kind
