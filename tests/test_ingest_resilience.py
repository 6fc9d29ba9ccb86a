"""The pure decisions behind ingest's resilience: backoff, close classification, the
watchdog's clocks, the resubscription planner and the bounded dedupe memory. Time
is always passed in, so nothing here sleeps."""

from __future__ import annotations

import re
import subprocess
import sys

import msgspec
import pytest

from krakenfeed.contracts import QualityEvent, QualityKind, Ticker, Trade
from krakenfeed.ingest.dedupe import IdMemory
from krakenfeed.ingest.protocol import FuturesProtocol, SpotProtocol
from krakenfeed.ingest.resilience import (
    Backoff,
    BackoffPolicy,
    Stale,
    Watchdog,
    classify_close,
    classify_upgrade,
    dropped,
)
from krakenfeed.ingest.subscriptions import PacingPolicy, Subscriptions
from krakenfeed.ingest.worker import parse_thresholds
from krakenfeed.replay.faults import (
    Close,
    Drop,
    Inject,
    Mute,
    RateLimit,
    Refuse,
    Reject,
    Silence,
    Skip,
    parse_script,
)
from tests import golden_frames as golden

S = 1_000_000_000


# --- backoff -------------------------------------------------------------------


def test_backoff_is_exponential_capped_full_jitter_and_the_first_retry_is_immediate() -> None:
    draws = iter([0.5] * 10)
    backoff = Backoff(BackoffPolicy(base_s=1.0, cap_s=8.0, healthy_s=30), rng=lambda: next(draws))
    assert [backoff.next_delay_s() for _ in range(7)] == [0.0, 0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    top = Backoff(BackoffPolicy(base_s=1.0, cap_s=8.0), rng=lambda: 0.999999)
    ceilings = [round(top.next_delay_s(), 3) for _ in range(6)]
    assert ceilings == [0.0, 1.0, 2.0, 4.0, 8.0, 8.0]


def test_only_a_healthy_connection_resets_the_attempts_and_they_never_run_out() -> None:
    backoff = Backoff(BackoffPolicy(base_s=1.0, cap_s=60.0, healthy_s=30), rng=lambda: 1.0)
    for _ in range(200):
        backoff.next_delay_s()
    assert backoff.next_delay_s() == 60.0, "unbounded attempts stay at the cap"
    backoff.connected(0)
    backoff.disconnected(29 * S)
    assert backoff.attempt == 201, "up 29 s is not healthy: a flapping server keeps its delay"
    backoff.connected(100 * S)
    backoff.disconnected(130 * S)
    assert backoff.attempt == 0
    assert backoff.next_delay_s() == 0.0


def test_a_bad_backoff_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="base_s <= cap_s"):
        BackoffPolicy(base_s=5, cap_s=1)


# --- close codes and upgrade statuses ------------------------------------------


@pytest.mark.parametrize(("code", "terminal"), [(1008, True), (1001, False), (1011, False)])
def test_close_1008_is_terminal_and_other_codes_retry(code: int, terminal: bool) -> None:
    verdict = classify_close(code, "why")
    assert (verdict.terminal, verdict.code) == (terminal, code)
    assert str(code) in verdict.cause and "why" in verdict.cause


@pytest.mark.parametrize(
    ("status", "terminal"),
    [(400, True), (401, True), (403, True), (404, True), (429, False), (503, False), (500, False)],
)
def test_upgrade_client_errors_are_terminal_and_throttling_retries(
    status: int, terminal: bool
) -> None:
    assert classify_upgrade(status).terminal is terminal


def test_a_drop_without_close_frame_is_a_retryable_1006() -> None:
    verdict = dropped("connection reset")
    assert (verdict.terminal, verdict.code) == (False, 1006)


# --- watchdog ------------------------------------------------------------------


def test_the_connection_clock_counts_any_frame_and_fires_only_past_the_limit() -> None:
    watchdog = Watchdog(silence_s=5.0, stale_s=60.0)
    assert watchdog.silent_for_s(last_frame_ns=10 * S, now_ns=15 * S) is None
    assert watchdog.silent_for_s(last_frame_ns=10 * S, now_ns=15 * S + 1) == pytest.approx(5.0)
    assert watchdog.next_deadline_ns(10 * S, {}) == 15 * S


def test_a_quiet_product_is_reported_stale_once_per_spell_with_its_own_threshold() -> None:
    watchdog = Watchdog(silence_s=5.0, stale_s=60.0, stale_overrides={"BTC/USD": 300.0})
    watchdog.watch(["PF_XBTUSD", "BTC/USD"], 0)
    data = {"PF_XBTUSD": 10 * S}
    assert watchdog.stale(data, 70 * S) == []
    assert watchdog.next_deadline_ns(69 * S, data) == 70 * S
    assert watchdog.stale(data, 71 * S) == [Stale("PF_XBTUSD", 61.0, 60.0)]
    assert watchdog.stale(data, 200 * S) == [], "one report per silent spell"
    data["PF_XBTUSD"] = 201 * S
    assert watchdog.stale(data, 262 * S) == [Stale("PF_XBTUSD", 61.0, 60.0)], "data re-arms it"
    assert [s.product for s in watchdog.stale(data, 301 * S)] == ["BTC/USD"]


def test_a_new_connection_restarts_the_product_clocks() -> None:
    watchdog = Watchdog(silence_s=5.0, stale_s=10.0)
    watchdog.watch(["PF_XBTUSD"], 0)
    watchdog.rearm(100 * S)
    assert watchdog.stale({}, 105 * S) == []
    assert watchdog.stale({}, 111 * S) == [Stale("PF_XBTUSD", 11.0, 10.0)]


# --- resubscription planner ----------------------------------------------------


def _planner(**policy: float) -> Subscriptions:
    planner = Subscriptions(
        ["ticker", "trade"],
        ["A", "B", "C"],
        PacingPolicy(**{"requests_per_s": 10.0, "burst": 2, "batch": 2, **policy}),  # type: ignore[arg-type]
        rng=lambda: 1.0,
    )
    planner.reset(0)
    return planner


def _sent(planner: Subscriptions, now_ns: int) -> list[tuple[str, tuple[str, ...]]]:
    return [(r.channel, r.products) for r in planner.due(now_ns)]


def test_requests_go_in_a_burst_then_at_the_pace_in_batches() -> None:
    planner = _planner()
    assert _sent(planner, 0) == [("ticker", ("A", "B")), ("ticker", ("C",))]
    assert _sent(planner, 0) == [], "the burst of two is spent"
    assert planner.next_wake_ns() == S // 10
    assert _sent(planner, S // 10) == [("trade", ("A", "B"))]
    assert _sent(planner, S // 5) == [("trade", ("C",))]
    assert planner.pending == {(c, p) for c in ("ticker", "trade") for p in "ABC"}
    assert not planner.settled


def test_only_unacked_products_are_retried_after_the_ack_timeout() -> None:
    planner = _planner(ack_timeout_s=1.0, burst=10)
    planner.due(0, paced=False)
    for key in [("ticker", "A"), ("ticker", "B"), ("ticker", "C"), ("trade", "A")]:
        planner.ack(*key)
    assert planner.next_wake_ns() == S
    assert planner.expire(S) == [("trade", "B"), ("trade", "C")]
    # Retried after their own full-jitter backoff: 0.5 s ceiling, rng 1.0.
    assert planner.next_wake_ns() == S + S // 2
    assert _sent(planner, S + S // 2) == [("trade", ("B", "C"))]
    planner.ack("trade", "B")
    planner.ack("trade", "C")
    assert planner.settled
    assert planner.active == {(c, p) for c in ("ticker", "trade") for p in "ABC"}
    assert planner.next_wake_ns() is None


def test_a_rate_limit_fails_the_unanswered_request_and_slows_the_pace() -> None:
    planner = _planner(burst=4)
    assert len(planner.due(0)) == 4
    planner.ack("ticker", "A")
    # Answers come in request order: ticker A,B has begun, so ticker C was refused.
    assert planner.rate_limited(10) == [("ticker", "C")]
    assert (planner.requests_per_s, planner.burst) == (5.0, 2)
    planner.ack("ticker", "B")
    assert planner.pending == {("trade", p) for p in "ABC"}
    planner.reset(S)
    assert (planner.requests_per_s, planner.burst) == (5.0, 2), "the lesson outlives a connection"


def test_a_refused_product_is_never_asked_for_again() -> None:
    planner = _planner(burst=10)
    planner.due(0, paced=False)
    planner.reject("ticker", "C", "Couldn't subscribe to invalid product `C`")
    planner.reset(S)
    asked = {(r.channel, p) for r in planner.due(S, paced=False) for p in r.products}
    assert ("ticker", "C") not in asked
    assert len(asked) == 5


def test_a_futures_reconnect_resends_every_subscription_and_the_heartbeat() -> None:
    protocol = FuturesProtocol(["PF_XBTUSD"], ["ticker", "trade"])
    protocol.subscribe_requests()
    protocol.handle(golden.FUTURES_SUBSCRIBED_TICKER.replace("PI_", "PF_").encode(), 1)
    assert [msgspec.json.decode(r) for r in protocol.connected(S)] == [
        msgspec.json.decode(golden.FUTURES_SUBSCRIBE_HEARTBEAT)
    ]
    assert protocol.subscriptions.active == set()
    assert [msgspec.json.decode(r)["feed"] for r in protocol.due_requests(S)] == [
        "ticker",
        "trade",
    ]


def test_spot_exceeded_msg_rate_is_retried_at_half_the_pace() -> None:
    protocol = SpotProtocol(["BTC/USD"], ["trade", "ticker"])
    protocol.connected(0)
    assert len(protocol.due_requests(0)) == 2
    protocol.handle(golden.SPOT_SUBSCRIBED_TRADE.encode(), 1)
    (event,) = protocol.handle(golden.SPOT_RATE_LIMIT.encode(), 2)
    assert isinstance(event, QualityEvent)
    assert (event.kind, event.detail) == (QualityKind.PROTOCOL_ERROR, "Exceeded msg rate")
    assert event.attributes == {"retry": "ticker:BTC/USD", "requests_per_s": 2.5}
    wake = protocol.subscriptions.next_wake_ns()
    assert wake is not None
    (again,) = protocol.due_requests(wake)
    assert msgspec.json.decode(again)["params"]["channel"] == "ticker"


# --- dedupe --------------------------------------------------------------------


def test_ids_pass_once_and_a_gap_reports_how_many_were_skipped() -> None:
    memory = IdMemory()
    assert [memory.admit("A", i) for i in (5, 6, 7)] == [0, 0, 0]
    assert memory.admit("A", 6) is None
    assert memory.admit("A", 11) == 3
    assert memory.admit("B", 1) == 0, "products are independent"


def test_a_late_trade_fills_its_hole_exactly_once() -> None:
    memory = IdMemory()
    memory.admit("A", 1)
    memory.admit("A", 10)
    assert memory.holes["A"] == [(2, 9)]
    assert memory.admit("A", 5) == 0
    assert memory.holes["A"] == [(2, 4), (6, 9)]
    assert memory.admit("A", 5) is None
    for i in (2, 3, 4, 6, 7, 8, 9):
        assert memory.admit("A", i) == 0
    assert memory.holes["A"] == []
    assert memory.admit("A", 0) is None, "below every hole: already seen or forgotten"


def test_the_memory_is_bounded_by_the_hole_count_whatever_the_gaps() -> None:
    memory = IdMemory(max_holes=3)
    memory.admit("A", 0)
    for i in range(1, 50):
        memory.admit("A", i * 10)
    assert memory.holes["A"] == [(461, 469), (471, 479), (481, 489)]
    assert memory.admit("A", 15) is None, "the oldest holes are forgotten first"
    assert memory.admit("A", 475) == 0


def test_a_resent_futures_snapshot_and_ticker_are_not_emitted_twice() -> None:
    protocol = FuturesProtocol(["PF_XBTUSD", "PI_XBTUSD"], ["ticker", "trade"])
    first = protocol.handle(golden.FUTURES_TRADE_SNAPSHOT.encode(), 1)
    assert first and all(isinstance(r, Trade) for r in first)
    protocol.connected(S)
    assert protocol.handle(golden.FUTURES_TRADE_SNAPSHOT.encode(), S) == []
    now = 1786046338050 * 1_000_000
    (ticker,) = protocol.handle(golden.FUTURES_TICKER.encode(), now)
    assert isinstance(ticker, Ticker)
    assert protocol.handle(golden.FUTURES_TICKER.encode(), now) == []
    assert protocol.metrics.duplicates == len(first) + 1


def test_a_resent_spot_ticker_snapshot_is_known_by_its_content() -> None:
    protocol = SpotProtocol(["BTC/USD"], ["ticker"])
    snapshot = golden.SPOT_TICKER.replace('"update"', '"snapshot"').encode()
    assert len(protocol.handle(snapshot, 1)) == 1
    assert protocol.handle(snapshot, 2) == []
    changed = snapshot.replace(b'"bid_qty":5.494e-6', b'"bid_qty":0.5')
    assert len(protocol.handle(changed, 3)) == 1
    assert len(protocol.handle(golden.SPOT_TICKER.encode(), 4)) == 1, "updates always pass"


# --- fault scripts -------------------------------------------------------------


def test_a_fault_script_reads_the_same_from_text_as_from_objects() -> None:
    text = (
        "drop@40 | refuse:429 | close:1011@25 + inject:malformed@5 | silence:1.5@10"
        " | ok | skip:30@2 + rate-limit:1 + reject:BTC/USD + mute:trade | close:1001*2"
    )
    assert parse_script(text) == [
        (Drop(40),),
        (Refuse(429),),
        (Close(1011, 25), Inject("malformed", 5)),
        (Silence(10, 1.5),),
        (),
        (Skip(30, 2), RateLimit(1), Reject("BTC/USD"), Mute("trade")),
        (Close(1001),),
        (Close(1001),),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("explode@3", "unknown fault 'explode@3'"),
        ("close:soon", "close code"),
        ("inject:nonsense", "inject one of malformed, schema, alert, error"),
        ("refuse:429@3", "applies to the whole connection"),
        ("drop*0", "repeat count"),
    ],
)
def test_a_bad_fault_script_names_the_piece_that_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_script(text)


# --- flags ---------------------------------------------------------------------


def test_per_product_stale_thresholds_parse_and_a_bad_one_is_named() -> None:
    assert parse_thresholds(["BTC/USD=300", "PF_XBTUSD=2.5"]) == {
        "BTC/USD": 300.0,
        "PF_XBTUSD": 2.5,
    }
    for bad in ("BTC/USD", "BTC/USD=soon", "=5", "PF_XBTUSD=0"):
        with pytest.raises(ValueError, match=f"got '{re.escape(bad)}'; expected PRODUCT=SECONDS"):
            parse_thresholds([bad])


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ["--stale-after-product", "PF_XBTUSD=soon"],
            "--stale-after-product: got 'PF_XBTUSD=soon'",
        ),
        (["--backoff-base-s", "5", "--backoff-cap-s", "1"], "need 0 <= base_s <= cap_s"),
    ],
)
def test_the_ingest_command_refuses_bad_resilience_flags_before_connecting(
    flags: list[str], message: str
) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "krakenfeed",
            "ingest",
            "--feed",
            "f",
            "--api",
            "futures",
            "--products",
            "PF_XBTUSD",
            "--broker",
            "127.0.0.1:1",
            *flags,
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert message in result.stderr
