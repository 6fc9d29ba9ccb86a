"""Ingest against every fault the replay server can script, end to end: a live
replay over real WebSockets, the worker, the real broker, the topics read back.

The server logs exactly which valid data frames it sent; whatever went wrong, each
of them must be on Kafka exactly once, each bad frame on the dlq with its reason,
and each reconnect, stale product and gap on the quality topic.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import msgspec
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition

from krakenfeed.contracts import (
    DeadLetter,
    DeadLetterReason,
    FeedId,
    QualityEvent,
    QualityKind,
    Source,
    Stream,
    Ticker,
    Trade,
    decode_record,
    topic,
)
from krakenfeed.embedded import wait_until
from krakenfeed.ingest.resilience import BackoffPolicy
from krakenfeed.ingest.worker import IngestSettings, IngestWorker
from krakenfeed.replay.faults import (
    Close,
    Drop,
    Fault,
    Inject,
    Mute,
    RateLimit,
    Refuse,
    Reject,
    Silence,
    Skip,
)
from krakenfeed.replay.server import ReplayServer
from krakenfeed.replay.session import Session, generate_session, merge_sessions
from tests.conftest import Kafka
from tests.kafka_reader import read_topic
from tests.test_ingest_e2e import running

FUTURES = ["PF_XBTUSD", "PI_XBTUSD"]
SPOT = ["BTC/USD", "ETH/USD"]
FAST_BACKOFF = BackoffPolicy(base_s=0.05, cap_s=0.2, healthy_s=60)
"""Retries in tens of ms: the tests check what happens, not how long it waits."""


@dataclass
class Expected:
    """What must be on Kafka, derived from what the server says it sent."""

    trades: Counter[tuple[Any, ...]] = field(default_factory=Counter)
    tickers: Counter[tuple[Any, ...]] = field(default_factory=Counter)
    gaps: list[tuple[str, int, int]] = field(default_factory=list)
    """(product, previous seq, seq) of each futures jump."""


def expected_from(sent: list[dict[str, Any]], api: Source) -> Expected:
    """Each distinct trade and ticker once; a gap where futures ids jump past the highest
    seen. Re-sent snapshots are what exactly-once must absorb, so they count once."""
    out = Expected()
    highest: dict[str, int] = {}
    last_spot_ticker: dict[str, tuple[Any, ...]] = {}
    trades: list[tuple[Any, ...]] = []
    for payload in sent:
        if api == "futures":
            if payload["feed"] == "ticker":
                key = (payload["product_id"], payload["time"], payload["bid"], payload["ask"])
                out.tickers[key] = 1
                continue
            items = payload["trades"] if payload["feed"] == "trade_snapshot" else [payload]
            for item in sorted(items, key=lambda t: t["seq"]):
                product, seq = item["product_id"], item["seq"]
                trades.append((product, seq, item["price"], item["qty"]))
                top = highest.get(product)
                if top is not None and seq > top + 1:
                    out.gaps.append((product, top, seq))
                highest[product] = max(seq, top if top is not None else seq)
            continue
        for item in payload["data"]:
            if payload["channel"] == "trade":
                trades.append((item["symbol"], item["trade_id"], item["price"], item["qty"]))
                continue
            content = (item["symbol"], item["bid"], item["ask"], item["bid_qty"], item["ask_qty"])
            if payload["type"] == "snapshot" and last_spot_ticker.get(item["symbol"]) == content:
                continue
            last_spot_ticker[item["symbol"]] = content
            out.tickers[content] += 1
    out.trades = Counter(dict.fromkeys(trades, 1))
    return out


def _settings(
    kafka: Kafka, feed: FeedId, api: Source, url: str, **overrides: Any
) -> IngestSettings:
    products = FUTURES if api == "futures" else SPOT
    options: dict[str, Any] = {
        "feed": feed,
        "api": api,
        "products": tuple(products),
        "channels": ("ticker", "trade"),
        "broker": kafka.bootstrap,
        "url": url,
        "max_clock_skew_ms": 0,
        "watchdog_s": 2.0,
        "backoff": FAST_BACKOFF,
        **overrides,
    }
    return IngestSettings(**options)


def _session(api: Source, count: int = 120, seed: int = 4) -> Session:
    return generate_session(
        api, FUTURES if api == "futures" else SPOT, count_per_product_channel=count, seed=seed
    )


@contextmanager
def serving(
    session: Session, faults: Sequence[Sequence[Fault]], **options: Any
) -> Iterator[ReplayServer]:
    options.setdefault("heartbeat_interval_s", 0.2)
    with ReplayServer(session, keep_times=True, live=True, faults=faults, **options) as server:
        yield server


@dataclass
class Outcome:
    expected: Expected
    trades: list[Trade]
    tickers: list[Ticker]
    dlq: list[DeadLetter]
    quality: list[QualityEvent]

    def of_kind(self, kind: QualityKind) -> list[QualityEvent]:
        return [event for event in self.quality if event.kind is kind]


def _identity(api: Source, record: Trade | Ticker) -> tuple[Any, ...]:
    if isinstance(record, Trade):
        return (
            record.product,
            record.seq if api == "futures" else record.trade_id,
            record.price,
            record.qty,
        )
    if api == "futures":
        return (record.product, record.exchange_time_ms, record.bid, record.ask)
    return (record.product, record.bid, record.ask, record.bid_size, record.ask_size)


def replay_until_done(
    kafka: Kafka,
    feed: FeedId,
    server: ReplayServer,
    worker: IngestWorker,
    *,
    dead_letters: int = 0,
    quality: int | None = None,
    until: Callable[[], bool] = lambda: True,
    timeout: float = 40,
) -> Outcome:
    """Run the worker until the session has been sent whole and everything the server
    sent is produced; then read every topic back, exactly."""
    api = worker.settings.api
    with running(worker) as exit_code:
        wait_until(lambda: server.finished_streams >= 1, timeout, "the session to be sent whole")
        expected = expected_from(server.sent(api), api)
        produced = worker.metrics.produced
        wait_until(
            lambda: (
                produced["Trade"] >= expected.trades.total()
                and produced["Ticker"] >= expected.tickers.total()
                and produced["DeadLetter"] >= dead_letters
                and (
                    quality is None
                    or produced["QualityEvent"] + worker.metrics.stale_events >= quality
                )
                and until()
            ),
            timeout,
            f"{expected.trades.total()} trades, {expected.tickers.total()} tickers,"
            f" {dead_letters} dead letters; have {produced}",
        )
    assert exit_code == [0]
    events = produced["QualityEvent"] + worker.metrics.stale_events
    counts = {
        Stream.TRADE: expected.trades.total(),
        Stream.TICKER: expected.tickers.total(),
        Stream.DLQ: dead_letters,
        Stream.QUALITY: events,
    }
    read = read_topics(kafka.bootstrap, {topic(feed, s): n for s, n in counts.items()})
    messages = {stream: read[topic(feed, stream)] for stream in counts}
    trades = [decode_record(m.value(), Trade) for m in messages[Stream.TRADE]]
    tickers = [decode_record(m.value(), Ticker) for m in messages[Stream.TICKER]]
    dlq = [decode_record(m.value(), DeadLetter) for m in messages[Stream.DLQ]]
    quality_records = [decode_record(m.value(), QualityEvent) for m in messages[Stream.QUALITY]]
    outcome = Outcome(expected, trades, tickers, dlq, quality_records)
    assert Counter(_identity(api, t) for t in trades) == expected.trades, "every trade exactly once"
    assert Counter(_identity(api, t) for t in tickers) == expected.tickers, (
        "every ticker exactly once"
    )
    reconnects = outcome.of_kind(QualityKind.RECONNECT)
    assert len(reconnects) == worker.connections - 1 == len(worker.recoveries)
    for event in reconnects:
        assert isinstance(event.attributes["downtime_ms"], float)
        assert event.attributes["downtime_ms"] >= 0
        assert event.attributes["cause"] in event.detail
    gaps = sorted(
        (e.product, e.attributes["previous_seq"], e.attributes["seq"])
        for e in outcome.of_kind(QualityKind.SEQUENCE_GAP)
    )
    assert gaps == sorted(expected.gaps)
    return outcome


def read_topics(
    bootstrap: str, counts: dict[str, int], timeout: float = 30.0
) -> dict[str, list[Message]]:
    """Exactly ``counts[topic]`` messages from partition 0 of each topic, read by one
    consumer, so that the look for extra (duplicate) messages is paid once."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "krakenfeed-test-reader",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    consumer.assign([TopicPartition(name, 0, OFFSET_BEGINNING) for name in counts])
    got: dict[str, list[Message]] = {name: [] for name in counts}
    deadline = time.monotonic() + timeout
    try:
        missing = sum(counts.values())
        while missing > 0 and time.monotonic() < deadline:
            for message in consumer.consume(num_messages=missing, timeout=0.5):
                if message.error() is None:
                    got[message.topic()].append(message)
                    missing -= 1
        for message in consumer.consume(num_messages=100, timeout=0.5):
            if message.error() is None:
                got[message.topic()].append(message)
    finally:
        consumer.close()
    assert {n: len(m) for n, m in got.items()} == counts, "exactly these many per topic"
    return got


def _causes(outcome: Outcome) -> list[str]:
    return [str(e.attributes["cause"]) for e in outcome.of_kind(QualityKind.RECONNECT)]


# --- one fault at a time -------------------------------------------------------


@pytest.mark.parametrize("api", ["futures", "spot"])
def test_abrupt_drops_without_a_close_frame_lose_and_repeat_nothing(
    kafka: Kafka, feed: FeedId, api: Source
) -> None:
    with serving(_session(api), [[Drop(after=60)], [Drop(after=45)]]) as server:
        worker = IngestWorker(_settings(kafka, feed, api, server.url(api)))
        outcome = replay_until_done(kafka, feed, server, worker)
    causes = _causes(outcome)
    assert len(causes) == 2
    assert all("dropped without a close frame" in cause for cause in causes)
    assert worker.metrics.duplicates > 0, "the re-sent snapshots were there to absorb"


@pytest.mark.parametrize("code", [1001, 1011])
def test_a_retryable_close_code_reconnects(kafka: Kafka, feed: FeedId, code: int) -> None:
    with serving(_session("futures"), [[Close(code, after=50)]]) as server:
        worker = IngestWorker(_settings(kafka, feed, "futures", server.url("futures")))
        outcome = replay_until_done(kafka, feed, server, worker)
    (cause,) = _causes(outcome)
    assert f"closed with {code}" in cause


def test_refused_upgrades_429_and_503_are_retried_with_backoff(kafka: Kafka, feed: FeedId) -> None:
    faults = [[Drop(after=40)], [Refuse(429)], [Refuse(503)], [Refuse(429)]]
    with serving(_session("futures"), faults) as server:
        worker = IngestWorker(_settings(kafka, feed, "futures", server.url("futures")))
        outcome = replay_until_done(kafka, feed, server, worker)
    (event,) = outcome.of_kind(QualityKind.RECONNECT)
    assert event.attributes["attempts"] == 4, "three refusals, then the attempt that worked"
    assert "dropped without a close frame" in str(event.attributes["cause"])
    assert server.connections == 5


def test_a_silent_socket_is_detected_within_the_watchdog_plus_one_second(
    kafka: Kafka, feed: FeedId
) -> None:
    watchdog_s = 1.0
    with serving(_session("futures"), [[Silence(after=50)]]) as server:
        worker = IngestWorker(
            _settings(kafka, feed, "futures", server.url("futures"), watchdog_s=watchdog_s)
        )
        outcome = replay_until_done(kafka, feed, server, worker)
    (cause,) = _causes(outcome)
    assert cause.startswith("silent for ")
    silent_s = float(cause.removeprefix("silent for ").split()[0])
    assert watchdog_s < silent_s <= watchdog_s + 1.0, cause
    (recovery,) = worker.recoveries
    assert recovery.first_record_ns is not None


def test_a_quiet_product_is_reported_stale_and_never_causes_a_reconnect(
    kafka: Kafka, feed: FeedId
) -> None:
    # PF_XBTUSD trades on; PI_XBTUSD is known to the exchange but never trades.
    busy = generate_session("futures", ["PF_XBTUSD"], count_per_product_channel=40, seed=2)
    quiet = generate_session("futures", ["PI_XBTUSD"], count_per_product_channel=0, seed=2)
    session = merge_sessions(busy, quiet)
    with serving(session, [], pace=12.0, heartbeat_interval_s=0.25) as server:
        worker = IngestWorker(
            _settings(
                kafka, feed, "futures", server.url("futures"), watchdog_s=0.8, stale_after_s=1.0
            )
        )
        outcome = replay_until_done(kafka, feed, server, worker, quality=1)
    stale = outcome.of_kind(QualityKind.STALE_PRODUCT)
    assert [event.product for event in stale] == ["PI_XBTUSD"]
    assert stale[0].attributes["threshold_s"] == 1.0
    assert worker.connections == server.connections == 1, "no reconnect while heartbeats flow"


def test_a_wall_clock_step_is_not_taken_for_a_silent_socket(kafka: Kafka, feed: FeedId) -> None:
    # The watchdog reads a monotonic clock: the wall clock jumping an hour ahead
    # while only heartbeats flow (an NTP step, a resumed VM) is no hour of silence.
    step_ns = [0]
    with serving(_session("futures", count=10), [], heartbeat_interval_s=0.5) as server:
        worker = IngestWorker(
            _settings(kafka, feed, "futures", server.url("futures"), watchdog_s=1.0),
            clock_ns=lambda: time.time_ns() + step_ns[0],
        )
        jump = threading.Timer(0.8, lambda: step_ns.__setitem__(0, 3600 * 10**9))
        jump.start()
        done_at = time.monotonic() + 2.5
        try:
            replay_until_done(kafka, feed, server, worker, until=lambda: time.monotonic() > done_at)
        finally:
            jump.cancel()
    assert step_ns[0], "the wall clock stepped during the run"
    assert worker.connections == server.connections == 1


def test_bad_frames_go_to_the_dlq_with_their_reason_and_alerts_to_quality(
    kafka: Kafka, feed: FeedId
) -> None:
    faults = [
        [Inject("malformed", 10), Inject("schema", 20), Inject("alert", 30), Drop(after=40)],
        [Inject("error", 5), Inject("malformed", 15)],
    ]
    with serving(_session("futures"), faults) as server:
        worker = IngestWorker(_settings(kafka, feed, "futures", server.url("futures")))
        outcome = replay_until_done(kafka, feed, server, worker, dead_letters=3, quality=3)
    assert sorted(letter.reason for letter in outcome.dlq) == [
        DeadLetterReason.MALFORMED_JSON,
        DeadLetterReason.MALFORMED_JSON,
        DeadLetterReason.SCHEMA_MISMATCH,
    ]
    assert all(letter.raw and letter.detail for letter in outcome.dlq)
    errors = sorted(e.detail for e in outcome.of_kind(QualityKind.PROTOCOL_ERROR))
    assert errors == ["Json Error", "replay fault: an injected alert"]


def test_exceeded_msg_rate_on_a_resubscribe_burst_is_retried_slower(
    kafka: Kafka, feed: FeedId
) -> None:
    with serving(_session("spot"), [[Drop(after=30)], [RateLimit(burst=1)]], pace=20.0) as server:
        worker = IngestWorker(_settings(kafka, feed, "spot", server.url("spot")))
        subscriptions = worker.protocol.subscriptions
        outcome = replay_until_done(
            kafka, feed, server, worker, quality=2, until=lambda: subscriptions.settled
        )
    (limited,) = [e for e in outcome.of_kind(QualityKind.PROTOCOL_ERROR)]
    assert limited.detail == "Exceeded msg rate"
    # The ticker request went first and spent the burst of one: trade was refused.
    assert limited.attributes["retry"] == "trade:BTC/USD trade:ETH/USD"
    assert subscriptions.active == {(c, p) for c in ("ticker", "trade") for p in SPOT}
    assert subscriptions.requests_per_s < worker.protocol.requests_per_s


def test_a_subscription_lost_without_an_answer_is_sent_again_and_only_it(
    kafka: Kafka, feed: FeedId
) -> None:
    faults: list[list[Fault]] = [[Drop(after=20)], [Mute("trade")]]
    with serving(_session("futures", count=50), faults, pace=20.0) as server:
        worker = IngestWorker(
            _settings(kafka, feed, "futures", server.url("futures"), ack_timeout_s=0.5)
        )
        subscriptions = worker.protocol.subscriptions
        replay_until_done(kafka, feed, server, worker, until=lambda: subscriptions.settled)
        requests = [msgspec.json.decode(text) for text in server.requests(1)]
    asked = Counter((r["feed"], p) for r in requests for p in r.get("product_ids", ["-"]))
    # The ticker was acked and never asked for again; each trade product twice.
    assert asked == {
        ("heartbeat", "-"): 1,
        **{("ticker", p): 1 for p in FUTURES},
        **{("trade", p): 2 for p in FUTURES},
    }
    assert subscriptions.retries == len(FUTURES)
    assert subscriptions.active == {(c, p) for c in ("ticker", "trade") for p in FUTURES}


def test_a_subscription_that_fails_after_settling_is_asked_for_again(
    kafka: Kafka, feed: FeedId
) -> None:
    failed = '{"event":"subscribed_failed","feed":"trade","product_ids":["PF_XBTUSD"]}'
    with serving(_session("futures", count=50), [[Inject(text=failed, after=20)]]) as server:
        worker = IngestWorker(_settings(kafka, feed, "futures", server.url("futures")))
        subscriptions = worker.protocol.subscriptions
        outcome = replay_until_done(
            kafka, feed, server, worker, until=lambda: subscriptions.settled
        )
        requests = [msgspec.json.decode(text) for text in server.requests(0)]
    asked = Counter((r["feed"], p) for r in requests for p in r.get("product_ids", ["-"]))
    assert asked[("trade", "PF_XBTUSD")] == 2
    assert asked[("trade", "PI_XBTUSD")] == asked[("ticker", "PF_XBTUSD")] == 1
    assert ("trade", "PF_XBTUSD") in subscriptions.active
    (error,) = outcome.of_kind(QualityKind.PROTOCOL_ERROR)
    assert error.detail == "subscribed_failed for trade PF_XBTUSD: will retry"
    assert worker.connections == 1


def test_a_product_rejected_after_a_reconnect_is_reported_and_the_rest_flows(
    kafka: Kafka, feed: FeedId
) -> None:
    with serving(_session("futures"), [[Drop(after=40)], [Reject("PI_XBTUSD")]]) as server:
        worker = IngestWorker(_settings(kafka, feed, "futures", server.url("futures")))
        outcome = replay_until_done(kafka, feed, server, worker, quality=3)
    rejected = outcome.of_kind(QualityKind.SUBSCRIPTION_REJECTED)
    assert sorted((e.product, e.attributes["channel"]) for e in rejected) == [
        ("PI_XBTUSD", "ticker"),
        ("PI_XBTUSD", "trade"),
    ]


def test_skipped_trades_are_a_gap_and_a_later_snapshot_fills_it_once(
    kafka: Kafka, feed: FeedId
) -> None:
    # Connection 1 never sends 12 frames; connection 2's snapshot still holds them.
    with serving(_session("futures"), [[Skip(12, after=30), Drop(after=50)]]) as server:
        worker = IngestWorker(_settings(kafka, feed, "futures", server.url("futures")))
        outcome = replay_until_done(kafka, feed, server, worker)
    assert outcome.of_kind(QualityKind.SEQUENCE_GAP), "the skip must have cost trades"
    assert all(not holes for holes in worker.protocol.trade_ids.holes.values()), "all filled"
    for event in outcome.of_kind(QualityKind.SEQUENCE_GAP):
        seq, previous = str(event.attributes["seq"]), str(event.attributes["previous_seq"])
        assert event.attributes["missing"] == int(seq) - int(previous) - 1


# --- several faults in one session ---------------------------------------------


def test_a_session_with_every_fault_still_delivers_everything_exactly_once(
    kafka: Kafka, feed: FeedId
) -> None:
    busy = _session("futures", count=150, seed=9)
    quiet = generate_session("futures", ["FI_XBTUSD_261225"], count_per_product_channel=0, seed=9)
    faults: list[list[Fault]] = [
        [Inject("malformed", 10), Skip(8, after=20), Drop(after=40)],
        [Refuse(429)],
        [Inject("alert", 5), Close(1011, after=30)],
        [Reject("PI_XBTUSD"), Silence(after=25)],
        [Inject("schema", 12), Close(1001, after=35)],
    ]
    with serving(merge_sessions(busy, quiet), faults) as server:
        settings = _settings(
            kafka,
            feed,
            "futures",
            server.url("futures"),
            products=(*FUTURES, "FI_XBTUSD_261225"),
            watchdog_s=1.0,
            stale_after_s=1.5,
        )
        worker = IngestWorker(settings)
        outcome = replay_until_done(
            kafka,
            feed,
            server,
            worker,
            dead_letters=2,
            until=lambda: worker.metrics.stale_events > 0 and worker.connections == 5,
        )
    causes = _causes(outcome)
    assert len(causes) == 4
    assert "dropped without a close frame" in causes[0]
    assert "closed with 1011" in causes[1]
    assert causes[2].startswith("silent for ")
    assert "closed with 1001" in causes[3]
    assert sorted(letter.reason for letter in outcome.dlq) == [
        DeadLetterReason.MALFORMED_JSON,
        DeadLetterReason.SCHEMA_MISMATCH,
    ]
    assert {e.product for e in outcome.of_kind(QualityKind.SUBSCRIPTION_REJECTED)} == {"PI_XBTUSD"}
    assert "FI_XBTUSD_261225" in {e.product for e in outcome.of_kind(QualityKind.STALE_PRODUCT)}
    assert outcome.of_kind(QualityKind.SEQUENCE_GAP)


def test_a_spot_session_with_several_faults_still_delivers_everything_exactly_once(
    kafka: Kafka, feed: FeedId
) -> None:
    faults: list[list[Fault]] = [
        [Inject("malformed", 8), Drop(after=30)],
        [RateLimit(burst=1), Close(1011, after=40)],
        [Refuse(503)],
        [Reject("ETH/USD"), Inject("schema", 5), Silence(after=20)],
    ]
    with serving(_session("spot", count=150, seed=6), faults) as server:
        worker = IngestWorker(_settings(kafka, feed, "spot", server.url("spot"), watchdog_s=1.0))
        outcome = replay_until_done(
            kafka, feed, server, worker, dead_letters=2, until=lambda: worker.connections == 4
        )
    causes = _causes(outcome)
    assert ["dropped without" in causes[0], "closed with 1011" in causes[1]] == [True, True]
    assert causes[2].startswith("silent for ")
    assert outcome.of_kind(QualityKind.RECONNECT)[1].attributes["attempts"] == 2
    assert sorted(letter.reason for letter in outcome.dlq) == [
        DeadLetterReason.MALFORMED_JSON,
        DeadLetterReason.SCHEMA_MISMATCH,
    ]
    assert [e.detail for e in outcome.of_kind(QualityKind.PROTOCOL_ERROR)] == ["Exceeded msg rate"]
    assert {e.product for e in outcome.of_kind(QualityKind.SUBSCRIPTION_REJECTED)} == {"ETH/USD"}
    assert worker.metrics.duplicates > 0


# --- terminal ------------------------------------------------------------------


def _ingest_process(kafka: Kafka, feed: FeedId, url: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "krakenfeed",
            "ingest",
            "--namespace",
            feed.namespace,
            "--feed",
            feed.name,
            "--api",
            "futures",
            "--products",
            ",".join(FUTURES),
            "--url",
            url,
            "--max-clock-skew-ms",
            "0",
            "--backoff-base-s",
            "0.05",
        ],
        env={**os.environ, "KRAKENFEED_BROKER": kafka.bootstrap},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.parametrize(
    ("faults", "reason"),
    [
        ([[Drop(after=30)], [Close(1008, after=20)]], "closed with 1008 (policy violation)"),
        ([[Refuse(403)]], "upgrade refused with HTTP 403"),
        ([[Drop(after=30)], [Refuse(401)]], "upgrade refused with HTTP 401"),
    ],
    ids=["close-1008", "upgrade-403", "upgrade-401-on-reconnect"],
)
def test_a_terminal_refusal_exits_non_zero_with_one_line(
    kafka: Kafka, feed: FeedId, faults: list[list[Fault]], reason: str
) -> None:
    with serving(_session("futures"), faults) as server:
        process = _ingest_process(kafka, feed, server.url("futures"))
        try:
            code = process.wait(timeout=30)
        finally:
            process.kill()
            output, _ = process.communicate()
        sent = expected_from(server.sent("futures"), "futures")
        assert server.connections == len(faults), "no retry after a terminal answer"
    assert code == 2, output
    # Not a terminal: one JSON object per log line.
    entries = [json.loads(line) for line in output.splitlines()]
    errors = [entry["message"] for entry in entries if entry["level"] == "ERROR"]
    assert len(errors) == 1, output
    assert reason in errors[0] and "terminal" in errors[0]
    # What came before the terminal answer was delivered, once.
    trades = read_topic(kafka.bootstrap, topic(feed, Stream.TRADE), sent.trades.total())
    assert (
        Counter(_identity("futures", decode_record(m.value(), Trade)) for m in trades)
        == sent.trades
    )
