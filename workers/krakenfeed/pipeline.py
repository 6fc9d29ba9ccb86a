"""The detector: Kafka → features → detectors → Kafka and PostgreSQL, as one
quixstreams Application.

    ticker ─▶ decode + quote detectors ─┐  ┌─▶ anomalies topic
                                        ├──┼─▶ dlq topic (records that broke the contract)
    trade  ─▶ decode + trade detectors ─┘  └─▶ PostgreSQL: ticker, trades, anomalies
    dlq, quality ─ decode ──────────────────────────────▶ PostgreSQL: quality_events

Every topic is its own stream; none is concatenated. A ``concat`` anywhere makes
quixstreams align all input partitions by timestamp, pausing and resuming them
as they interleave, which measured about 7x slower here. So ticker and trade
keep their own per-product engine state in RocksDB: the quote detectors need only
tickers and the trade detectors only trades. Staleness is judged on the ticker
stream, because a quiet product legitimately goes minutes without a trade.

quixstreams owns consuming, state, checkpoints and commits; offsets are committed
only after the sink has written every row they cover.

Delivery. By default the Application runs ``processing_guarantee="exactly-once"``:
each checkpoint is one Kafka transaction holding the anomalies and dead letters
it produced, the state's changelog records and the input offsets. A checkpoint
first writes its rows to PostgreSQL, then commits that transaction; a crash
in between replays the checkpoint, whose Kafka output was aborted (consumers of
the anomalies topic read ``read_committed``) and whose rows are upserts on their
natural keys, so PostgreSQL and the anomalies topic both end up holding every
result once. The one output outside the transactions is the wall-clock stale
report (``SilenceWatch``): at-least-once on Kafka, idempotent by key (see there).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

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
from krakenfeed.detect import (
    DetectorConfig,
    DetectorEngine,
    ProductState,
    decode_state,
    encode_state,
)
from krakenfeed.kafka import (
    Application,
    BaseSink,
    ProcessingGuarantee,
    StreamingDataFrame,
    Topic,
    client_closed,
    contract_topics,
    make_application,
    message_context,
)
from krakenfeed.store import EncodedRecord, PostgresSink
from krakenfeed.telemetry import Tracing, trace_id_hex

log = logging.getLogger(__name__)

_STATE_KEY = "engine"
STATS_INTERVAL_MS = 5_000
"""How often the consumer hands its statistics to ``consumer_stats``."""
SESSION_TIMEOUT_MS = 6_000
"""How long a replica that stopped answering keeps its partitions."""


class Decoder:
    """Turns a Kafka value into its contract record, or a dead letter that says why not.

    A dead letter's receive time is the Kafka record's timestamp, not the clock:
    replaying the same record gives the same dead letter, hence the same quality
    event id, so a replay adds no row.
    """

    def __init__(self, feed: FeedId, stream: Stream, kind: type[Any]):
        self._topic = topic(feed, stream)
        self._decode = msgspec.json.Decoder(kind).decode

    def __call__(self, value: bytes, key: Any, timestamp_ms: int, headers: Any) -> Any:
        """The quixstreams ``apply(…, metadata=True)`` form."""
        return self.decode(value, timestamp_ms)

    def decode(self, value: bytes, timestamp_ms: int) -> Any:
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
                received_time_ns=timestamp_ms * 1_000_000,
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
    """The one stateful step: decode, update the product's engine state, publish.

    Decoding, detection and publishing share one step on purpose: every quixstreams
    step adds per-message overhead, and every fork of the stream pickles each value
    to copy it. Anomalies and dead letters go to Kafka through the Application's own
    producer (so under exactly-once they join the checkpoint's transaction). The
    record and its anomalies go to the PostgreSQL sink as one list, put there by this
    step: a ``.sink()`` would add a step and an item per record, and quixstreams'
    per-item expand costs more than the sink unpacking a list. The record goes as the
    JSON it arrived as, now validated, which PostgreSQL unpacks into its row.
    """

    def __init__(
        self,
        decoder: Decoder,
        engine: DetectorEngine,
        producer: Any,
        topics: dict[Stream, Topic],
        clock_ns: Callable[[], int],
        sink: PostgresSink,
        states: WriteBehindState,
        watch: SilenceWatch | None = None,
        tracing: Tracing | None = None,
        group: str = "",
    ) -> None:
        self._put = sink.put
        self._link = sink.link
        self._tracing = tracing
        self._group = group
        self._watch = watch
        self._decode = decoder.decode
        self._engine = engine
        self._produce = producer.produce
        self._anomalies = topics[Stream.ANOMALIES].name
        self._dead_letters = topics[Stream.DLQ].name
        self._clock_ns = clock_ns
        self._states = states

    def __call__(self, value: bytes, key: Any, timestamp_ms: int, headers: Any) -> None:
        context = message_context()
        record = self._decode(value, timestamp_ms)
        if isinstance(record, DeadLetter):
            self._publish(self._dead_letters, record, record_timestamp_ms(record))
            self._put(context.topic, context.partition, record)
            return
        product_state = self._states.get(key, record.product, context.partition)
        watch = self._watch
        if watch is not None:
            watch.before(key, product_state)
        event_time_ms = record_timestamp_ms(record)
        anomalies = self._engine.process(product_state, record, event_time_ms, self._clock_ns())
        if watch is not None:
            watch.seen(key, context.partition, product_state)
        if anomalies:
            headers = None
            if self._tracing is not None:
                anomalies, headers = self._trace(anomalies, context, key)
            for anomaly in anomalies:
                self._publish(self._anomalies, anomaly, anomaly.event_time_ms, headers)
        row = EncodedRecord(type(record), event_time_ms, value)
        self._put(context.topic, context.partition, [row, *anomalies])

    def _publish(
        self,
        topic_name: str,
        record: Anomaly | DeadLetter,
        timestamp: int,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        self._produce(
            topic=topic_name,
            value=encode_record(record),
            key=record.product,
            timestamp=timestamp,
            headers=headers,
        )

    def _trace(
        self, anomalies: list[Anomaly], context: Any, key: Any
    ) -> tuple[list[Anomaly], list[tuple[str, bytes]]]:
        """The anomalies carrying the trace of the span of the record that raised
        them, and the headers that make that span their records' parent."""
        assert self._tracing is not None
        span, new = self._tracing.raised(
            sorted({a.detector for a in anomalies}),
            context.topic,
            context.partition,
            context.offset,
            key,
            self._group,
        )
        if new:
            self._link(context.topic, context.partition, span)
        trace_id = trace_id_hex(span)
        traced = [msgspec.structs.replace(a, trace_id=trace_id) for a in anomalies]
        return traced, self._tracing.headers(span)


def traced(step: Detect, tracing: Tracing, sink: PostgresSink, group: str) -> Any:
    """``step`` inside the ``process`` span of each record whose producer sampled it
    (one span for the consecutive records of an ingest burst on a partition); a new
    span's context goes to the sink, whose batch span links to it. Unsampled
    records cost one look at their headers, and one at the open spans."""
    sampled_traceparent = tracing.sampled_traceparent
    open_processes = tracing.open_processes

    def step_traced(value: bytes, key: Any, timestamp_ms: int, headers: Any) -> None:
        traceparent = sampled_traceparent(headers)
        if traceparent is None:
            if open_processes:
                # The partition may have moved on from a burst: its span ends here.
                context = message_context()
                tracing.end_processing(context.topic, context.partition)
            return step(value, key, timestamp_ms, headers)
        context = message_context()
        opened, new = tracing.processing(
            headers, traceparent, context.topic, context.partition, context.offset, group
        )
        if new:
            sink.link(context.topic, context.partition, opened.span.get_span_context())
        try:
            with tracing.within(opened):
                return step(value, key, timestamp_ms, headers)
        finally:
            opened.processed(key, context.offset)

    return step_traced


class WriteBehindState(BaseSink):
    """The products' engine states, kept decoded between records and written to the
    quixstreams state store once per checkpoint rather than once per record.

    Encoding a state and writing it to the store's transaction on every record cost
    more than the detectors themselves. Registered with the Application's sink
    manager, this object is flushed by every checkpoint before the checkpoint
    prepares its store transactions: each state the checkpoint changed goes into
    that checkpoint's transaction, hence into its changelog records and, under
    exactly-once, into the Kafka transaction of its offsets and anomalies, exactly
    as writing it on every record did. Reads give what per-record writes would:

    - a product already read in the open checkpoint is the object in memory, which
      is what the store would hold after its last record;
    - a product's first read in a checkpoint reuses the object in memory only when
      the store holds the very bytes this object last wrote for it (the encoding is
      deterministic: equal bytes, equal state). After an aborted checkpoint, a
      rebalance or a restart the store holds other bytes, or none, and those are
      decoded;
    - when a checkpoint ends without a flush (it was dropped), the states it
      changed are ahead of the store and are forgotten.
    """

    def __init__(self, new_state: Callable[[str], ProductState], sdf: StreamingDataFrame) -> None:
        """Keeps the states of ``sdf``'s stream, in the state store it registers."""
        super().__init__()
        sdf.register_store()
        self._new_state = new_state
        self._processing = sdf.processing_context
        self._stream_id = sdf.stream_id
        self._open: object = None
        """The checkpoint that the states in ``_changed`` belong to."""
        self._changed: dict[Any, tuple[ProductState, Any]] = {}
        """Per key (product) read in the open checkpoint: its state, and the
        quixstreams ``State`` of the checkpoint's transaction to write it to."""
        self._written: dict[Any, tuple[ProductState, bytes]] = {}
        """Per key: its state as of the last flush, and the bytes written for it.
        Bounded by the feed's products."""

    def get(self, key: Any, product: str, partition: int) -> ProductState:
        """The state of ``key``'s product, on ``partition``, which the caller may
        change until the next checkpoint."""
        checkpoint = self._processing.checkpoint
        if checkpoint is not self._open:
            self._changed.clear()
            self._open = checkpoint
        changed = self._changed.get(key)
        if changed is not None:
            return changed[0]
        # What a stateful ``apply`` hands its step on every record, taken here only
        # on a product's first record in the checkpoint.
        state = checkpoint.get_store_transaction(self._stream_id, partition).as_state(prefix=key)
        stored = state.get_bytes(_STATE_KEY)
        written = self._written.pop(key, None)
        if written is not None and written[1] == stored:
            product_state = written[0]
        elif stored is None:
            product_state = self._new_state(product)
        else:
            product_state = decode_state(stored)
        self._changed[key] = (product_state, state)
        return product_state

    def flush(self) -> None:
        """Write the states the open checkpoint changed into its store transactions."""
        for key, (product_state, state) in self._changed.items():
            encoded = encode_state(product_state)
            state.set_bytes(_STATE_KEY, encoded)
            self._written[key] = (product_state, encoded)
        self._changed.clear()

    def add(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("WriteBehindState takes states from get(), not records from .sink()")


class SilenceWatch:
    """The wall-clock half of staleness: notices a product that went quiet while
    nothing at all arrives for it, which no record-driven step can.

    The stream's step reports every product it processes (``seen``); a thread calls
    ``check`` every ``interval_s`` on the injected clock's terms. A product that has
    been silent for ``stale.silent_after_ms`` is reported once, as a ``stale``
    anomaly whose ``event_time_ms`` is the product's last event time, so the same
    silence always has the same key; when the product's records resume, ``before``
    marks the silence as reported, so the event-time gap does not report it again.
    Only products on partitions this process still owns are checked: after a
    rebalance their silence is the new owner's to judge. Anomalies go to the
    anomalies topic through a producer of their own (not the stream's, whose
    transactions belong to checkpoints) and to PostgreSQL through the sink's
    writer; a write that fails is retried on the next check.

    Its reports are therefore outside the exactly-once checkpoints: at-least-once.
    A silence is reported under the same key (product, ``stale``, last event time)
    every time, so PostgreSQL keeps one row whatever repeats; on the anomalies
    topic a replica that restarts, or takes the partition over, while the product
    is still silent may publish the same report again, which a consumer recognises
    by that key.
    """

    def __init__(
        self,
        engine: DetectorEngine,
        consumer: Any,
        new_producer: Callable[[], Any],
        anomalies_topic: str,
        sink: PostgresSink,
        clock_ns: Callable[[], int],
        interval_s: float = 1.0,
    ) -> None:
        self._engine = engine
        self._consumer = consumer
        self._new_producer = new_producer
        self._topic = anomalies_topic
        self._sink = sink
        self._clock_ns = clock_ns
        self._interval_s = interval_s
        self._products: dict[str, tuple[int, ProductState]] = {}
        """Per product: its partition and its latest state (the stream's own object)."""
        self._reported: dict[str, int] = {}
        """Per product: the last event time of the silence already reported."""
        self._unwritten: list[Anomaly] = []
        self._thread: threading.Thread | None = None

    def before(self, product: str, state: ProductState) -> None:
        if self._reported.pop(product, None) == state.stale.last_event_ms:
            state.stale.silence_reported = True

    def seen(self, product: str, partition: int, state: ProductState) -> None:
        self._products[product] = (partition, state)
        if self._thread is None:
            self._start()

    def check(self) -> list[Anomaly]:
        """Report the products that went silent since the last check."""
        owned = {tp.partition for tp in self._consumer.assignment()}
        now_ns = self._clock_ns()
        found: list[Anomaly] = []
        for product, (partition, state) in list(self._products.items()):
            if partition not in owned:
                del self._products[product]
                continue
            # A copy: the stream's thread owns the state, and records the report
            # itself (``before``) when the product's records resume.
            snapshot = msgspec.structs.replace(state, stale=msgspec.structs.replace(state.stale))
            if self._reported.get(product) == snapshot.stale.last_event_ms:
                continue
            for anomaly in self._engine.check_stale(snapshot, now_ns):
                self._reported[product] = snapshot.stale.last_event_ms
                found.append(anomaly)
        if found:
            # Silences are rare: a producer for each report, flushed and dropped.
            with self._new_producer() as producer:
                for anomaly in found:
                    producer.produce(
                        topic=self._topic,
                        value=encode_record(anomaly),
                        key=anomaly.product,
                        timestamp=anomaly.event_time_ms,
                    )
        self._unwritten += found
        if self._unwritten:
            try:
                self._sink.write_now(self._unwritten)
                self._unwritten = []
            except Exception as exc:  # the sink logged it; try again next time
                log.debug("silence report not written yet: %s", exc)
        return found

    def _start(self) -> None:
        """Check every ``interval_s`` until the stream's consumer is closed (the
        Application stopped)."""
        self._thread = threading.Thread(target=self._run, name="silence-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            time.sleep(self._interval_s)
            try:
                self.check()
            except Exception as exc:
                if client_closed(exc):  # the Application stopped
                    return
                log.exception(
                    "the wall-clock stale check failed; it runs again in %ss", self._interval_s
                )


CONSUMED: Final[tuple[tuple[Stream, type[Any]], ...]] = (
    (Stream.TICKER, Ticker),
    (Stream.TRADE, Trade),
    (Stream.DLQ, DeadLetter),
    (Stream.QUALITY, QualityEvent),
)
"""The streams the detector reads, and their records: the market streams through
the detectors, the dead letters and quality events into PostgreSQL."""


def consumed_topics(feed: FeedId) -> frozenset[str]:
    """The topics the detector's consumer reads (not its state's changelogs)."""
    return frozenset(topic(feed, stream) for stream, _ in CONSUMED)


def build_detector_app(
    feed: FeedId,
    broker: str,
    conninfo: str = "",
    *,
    config: DetectorConfig | None = None,
    group: str | None = None,
    commit_interval: float = 0.25,
    processing_guarantee: ProcessingGuarantee = "exactly-once",
    instance_id: str | None = None,
    state_dir: Path | None = None,
    sink: PostgresSink | None = None,
    retention_days: int = 30,
    clock_ns: Callable[[], int] = time.time_ns,
    silence_check_s: float | None = 1.0,
    consumer_stats: Callable[[str], None] | None = None,
    tracing: Tracing | None = None,
) -> tuple[Application, PostgresSink]:
    """The detector's Application and its sink.

    ``instance_id`` names this replica across its restarts (its Kafka transactional
    id): a restart then fences the transaction its killed predecessor left open at
    once, instead of leaving it to time out while ``read_committed`` consumers wait.
    ``consumer_stats`` receives librdkafka's statistics JSON every few seconds, from
    the stream's own thread (consumer lag and records consumed, for metrics).
    """
    group = group or consumer_group(feed)
    app = detector_application(
        broker,
        group,
        commit_interval=commit_interval,
        processing_guarantee=processing_guarantee,
        instance_id=instance_id,
        state_dir=state_dir,
        consumer_stats=consumer_stats,
    )
    topics = contract_topics(app, broker, feed, list(Stream))
    config = config or DetectorConfig()
    sink = sink or PostgresSink(feed, conninfo, retention_days=retention_days, tracing=tracing)

    def decoded(stream: Stream, kind: type[Any]) -> Any:
        return app.dataframe(topics[stream]).apply(Decoder(feed, stream, kind), metadata=True)

    engines = {
        CONSUMED[0]: DetectorEngine(feed, config),
        CONSUMED[1]: DetectorEngine(feed, trade_stream_config(config)),
    }
    for (stream, kind), engine in engines.items():
        sdf = app.dataframe(topics[stream])
        watch = None
        if engine.config.stale.enabled and silence_check_s is not None:
            watch = SilenceWatch(
                engine,
                sdf.processing_context.consumer,
                app.get_producer,
                topics[Stream.ANOMALIES].name,
                sink,
                clock_ns,
                silence_check_s,
            )
        processing = sdf.processing_context
        states = WriteBehindState(engine.new_state, sdf)
        detect = Detect(
            Decoder(feed, stream, kind),
            engine,
            processing.producer,
            topics,
            clock_ns,
            sink,
            states,
            watch,
            tracing,
            group,
        )
        step = traced(detect, tracing, sink, group) if tracing else detect
        sdf.apply(step, metadata=True)
        # The step puts its rows into the sink and its states into the store itself;
        # registered, both are flushed by every checkpoint like a ``.sink()``.
        processing.sink_manager.register(states)
        processing.sink_manager.register(sink)
    for stream, kind in CONSUMED[2:]:
        decoded(stream, kind).sink(sink)
    return app, sink


def detector_application(
    broker: str,
    group: str,
    *,
    commit_interval: float = 0.25,
    processing_guarantee: ProcessingGuarantee = "exactly-once",
    instance_id: str | None = None,
    state_dir: Path | None = None,
    consumer_stats: Callable[[str], None] | None = None,
) -> Application:
    """The detector's Application, with no dataframe yet: its consumer, producer and
    checkpoint settings. The latency benchmark runs a bare passthrough on it."""
    # Anomalies are few and wanted at once; checkpoints flush the producer anyway.
    producer_config: dict[str, Any] = {"linger.ms": 1}
    if instance_id:
        producer_config["transactional.id"] = f"{group}-{instance_id}"
    return make_application(
        broker,
        consumer_group=group,
        auto_offset_reset="earliest",
        commit_interval=commit_interval,
        # The loop checks for a due checkpoint between polls: a poll that waits long
        # on a quiet feed holds back the commit of the rows it already has.
        consumer_poll_timeout=0.05,
        state_dir=str(state_dir) if state_dir else None,
        consumer_extra_config={
            "session.timeout.ms": SESSION_TIMEOUT_MS,
            # Three heartbeats per session, not librdkafka's default two (3 s): one
            # slow answer from the group coordinator no longer ends the session.
            "heartbeat.interval.ms": SESSION_TIMEOUT_MS // 3,
            # A broker that does not answer a waiting fetch as soon as data arrives
            # (Tansu) adds this wait to the latency of a quiet feed's records. Much
            # less makes such a broker spin: at 1 ms a bare consumer of 1k records/s
            # fell seconds behind on Tansu; at 20 ms its median rose by 5 ms.
            "fetch.wait.max.ms": 5,
            **(
                {"stats_cb": consumer_stats, "statistics.interval.ms": STATS_INTERVAL_MS}
                if consumer_stats
                else {}
            ),
        },
        processing_guarantee=processing_guarantee,
        producer_extra_config=producer_config,
    )


def trade_stream_config(config: DetectorConfig) -> DetectorConfig:
    """The trade stream's settings: staleness is the ticker stream's to judge."""
    return msgspec.structs.replace(
        config, stale=msgspec.structs.replace(config.stale, enabled=False)
    )
