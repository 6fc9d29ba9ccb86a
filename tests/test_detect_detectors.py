"""Each detector reports its pattern once and stays quiet on clean data."""

from __future__ import annotations

import math
import random

import msgspec

from krakenfeed.contracts import Severity, Ticker
from krakenfeed.detect.config import (
    LikelihoodConfig,
    PremiumDislocationConfig,
    PriceJumpConfig,
    ScorerConfig,
    SpreadBlowoutConfig,
    StaleConfig,
    TradeBurstConfig,
)
from krakenfeed.detect.detectors import (
    Finding,
    Likelihood,
    PremiumDislocation,
    PriceJump,
    PriceJumpState,
    SpreadBlowout,
    Stale,
    TradeBurst,
)
from krakenfeed.detect.features import QuoteFeatures, update_quote

T0 = 1_786_046_338_000


def quote(time_ms: int, mid: float, spread_bps: float = 1.0, size: float = 1.0) -> Ticker:
    half = mid * spread_bps / 20_000
    return Ticker(
        source="spot",
        product="BTC/USD",
        exchange_time_ms=None,
        received_time_ns=time_ms * 1_000_000,
        bid=mid - half,
        ask=mid + half,
        bid_size=size,
        ask_size=size,
        last=mid,
        volume=1.0,
    )


def run_price_jump(
    mids: list[tuple[int, float]], config: PriceJumpConfig | None = None
) -> list[tuple[int, Finding]]:
    detector = PriceJump(config or PriceJumpConfig())
    state, features = detector.new_state(), QuoteFeatures()
    found = []
    for time_ms, mid in mids:
        if update_quote(features, quote(time_ms, mid), time_ms):
            finding = detector.observe(state, features, time_ms)
            if finding is not None:
                found.append((time_ms, finding))
    return found


def random_walk(rng: random.Random, steps: int, bps_per_step: float = 1.0) -> list[float]:
    mids, mid = [], 64_400.0
    for _ in range(steps):
        mid *= math.exp(rng.gauss(0.0, bps_per_step * 1e-4))
        mids.append(mid)
    return mids


def test_price_jump_reports_a_50_bps_jump_once_with_the_range_it_expected() -> None:
    mids = random_walk(random.Random(1), 300)
    jumped = [mid * math.exp(50e-4) for mid in mids[200:]]
    series = [(T0 + i * 1000, mid) for i, mid in enumerate(mids[:200] + jumped)]

    found = run_price_jump(series)

    assert [time for time, _ in found] == [T0 + 200_000]
    finding = found[0][1]
    assert finding.value == series[200][1]
    assert finding.low < series[199][1] < finding.high < finding.value
    assert finding.score >= 10.0
    assert finding.severity is Severity.CRITICAL
    assert finding.extra is not None
    assert 45 < float(finding.extra["log_return_bps"] or 0) < 55


def test_price_jump_stays_quiet_on_a_random_walk() -> None:
    mids = random_walk(random.Random(2), 20_000)
    assert run_price_jump([(T0 + i * 1000, mid) for i, mid in enumerate(mids)]) == []


def test_a_move_after_a_quiet_minute_is_scaled_by_the_time_it_took() -> None:
    mids = random_walk(random.Random(3), 200)
    series = [(T0 + i * 1000, mid) for i, mid in enumerate(mids)]
    # 60 s without a change, then a 15 bps move: a diffusive walk gets there easily.
    series.append((series[-1][0] + 60_000, mids[-1] * math.exp(15e-4)))
    assert run_price_jump(series) == []


def test_price_jumps_within_the_cooldown_form_one_episode() -> None:
    mids = random_walk(random.Random(4), 200)
    series = [(T0 + i * 1000, mid) for i, mid in enumerate(mids)]
    last_time, mid = series[-1]
    for offset_ms, step_bps in ((1_000, 60), (3_000, -60), (30_000, 80)):
        mid *= math.exp(step_bps * 1e-4)
        series.append((last_time + offset_ms, mid))
    found = run_price_jump(series)
    assert [time - last_time for time, _ in found] == [1_000, 30_000]


def test_price_jump_state_round_trips_through_msgpack() -> None:
    detector = PriceJump(PriceJumpConfig())
    state, features = detector.new_state(), QuoteFeatures()
    for i, mid in enumerate(random_walk(random.Random(5), 100)):
        if update_quote(features, quote(T0 + i * 1000, mid), T0 + i * 1000):
            detector.observe(state, features, T0 + i * 1000)
    data = msgspec.msgpack.encode(state)
    assert msgspec.msgpack.decode(data, type=PriceJumpState) == state


def run_spread(spreads: list[float]) -> list[tuple[int, Finding]]:
    detector = SpreadBlowout(SpreadBlowoutConfig())
    state = detector.new_state()
    found = []
    for i, spread in enumerate(spreads):
        finding = detector.observe(state, spread, T0 + i * 1000)
        if finding is not None:
            found.append((i, finding))
    return found


def noisy_spreads(rng: random.Random, count: int) -> list[float]:
    return [1.5 * math.exp(rng.gauss(0.0, 0.25)) for _ in range(count)]


def test_a_spread_blowout_is_reported_once_for_its_whole_duration() -> None:
    spreads = noisy_spreads(random.Random(6), 400)
    for i in range(300, 306):
        spreads[i] *= 8.0
    found = run_spread(spreads)
    assert [i for i, _ in found] == [300]
    finding = found[0][1]
    assert finding.value == spreads[300]
    assert finding.low < 1.5 < finding.high < finding.value
    assert finding.extra is not None and 1.2 < float(finding.extra["usual_spread_bps"] or 0) < 1.8


def test_spread_stays_quiet_on_noise_and_on_a_one_tick_market() -> None:
    assert run_spread(noisy_spreads(random.Random(7), 20_000)) == []
    rng = random.Random(8)
    tick_bps = 0.1 / 64_400 * 10_000
    ticks = [tick_bps * (3 if rng.random() < 0.01 else 1) for _ in range(5_000)]
    assert run_spread(ticks) == []


def run_trades(trades: list[tuple[int, float]]) -> list[tuple[int, Finding]]:
    detector = TradeBurst(TradeBurstConfig())
    state = detector.new_state()
    found = []
    for time_ms, notional in trades:
        finding = detector.observe(state, notional, time_ms)
        if finding is not None:
            found.append((time_ms, finding))
    return found


def poisson_trades(rng: random.Random, seconds: int, per_second: float) -> list[tuple[int, float]]:
    trades, time_ms = [], float(T0)
    while time_ms < T0 + seconds * 1000:
        time_ms += rng.expovariate(per_second) * 1000
        trades.append((int(time_ms), 64_400 * rng.lognormvariate(math.log(0.01), 1.0)))
    return trades


def test_a_burst_of_trades_is_reported_by_count() -> None:
    trades = poisson_trades(random.Random(9), 600, 2.0)
    burst_ms = trades[-1][0] + 1_000
    trades += [(burst_ms + i * 30, 640.0) for i in range(60)]
    found = run_trades(trades)
    assert len(found) == 1
    time_ms, finding = found[0]
    assert burst_ms <= time_ms < burst_ms + 2_000
    assert finding.extra is not None and finding.extra["burst_by"] == "count"
    assert finding.value >= finding.high
    assert 5 < float(finding.extra["expected"] or 0) < 15


def test_a_block_trade_is_reported_by_notional() -> None:
    trades = poisson_trades(random.Random(10), 600, 2.0)
    block_ms = trades[-1][0] + 500
    found = run_trades([*trades, (block_ms, 10 * 64_400.0)])
    assert [(time, finding.extra and finding.extra["burst_by"]) for time, finding in found] == [
        (block_ms, "notional")
    ]


def test_trade_burst_stays_quiet_on_poisson_trades_and_on_a_sparse_product() -> None:
    assert run_trades(poisson_trades(random.Random(11), 3_600, 3.0)) == []
    sparse = poisson_trades(random.Random(12), 3_600, 0.1)
    sparse_burst = sparse[-1][0] + 1_000
    assert run_trades([*sparse, *((sparse_burst + i, 640.0) for i in range(8))]) == []


def run_premium(bases: list[float]) -> list[tuple[int, Finding]]:
    detector = PremiumDislocation(PremiumDislocationConfig())
    state = detector.new_state()
    found = []
    for i, basis in enumerate(bases):
        finding = detector.observe(state, basis, T0 + i * 1000)
        if finding is not None:
            found.append((i, finding))
    return found


def test_a_premium_dislocation_is_reported_once_in_either_direction() -> None:
    rng = random.Random(13)
    bases = [3.0 + rng.gauss(0.0, 1.5) for _ in range(600)]
    for i in range(300, 320):
        bases[i] += 40.0
    for i in range(450, 470):
        bases[i] -= 40.0
    found = run_premium(bases)
    assert [i for i, _ in found] == [300, 450]
    assert all(f.low < 3.0 < f.high for _, f in found)
    assert found[0][1].value > found[0][1].high and found[1][1].value < found[1][1].low


def test_premium_stays_quiet_on_a_noisy_drifting_basis() -> None:
    rng = random.Random(14)
    assert run_premium([3.0 + i * 1e-3 + rng.gauss(0.0, 1.5) for i in range(20_000)]) == []


def test_an_event_time_gap_is_reported_when_records_resume() -> None:
    detector = Stale(StaleConfig(stale_after_ms=15_000))
    state = detector.new_state()
    times = [T0 + i * 1000 for i in range(30)] + [T0 + 39_000, T0 + 40_000, T0 + 60_000]
    found = [(t, f) for t in times if (f := detector.observe_record(state, t, 0)) is not None]
    assert [(t, f.value) for t, f in found] == [(T0 + 60_000, 20.0)]
    assert found[0][1].extra == {"kind": "gap", "last_event_ms": T0 + 40_000}


def test_late_records_do_not_move_the_last_event_time_back() -> None:
    detector = Stale(StaleConfig(stale_after_ms=15_000))
    state = detector.new_state()
    for time_ms in (T0, T0 + 10_000, T0 - 20_000, T0 + 20_000):
        assert detector.observe_record(state, time_ms, 0) is None
    assert state.last_event_ms == T0 + 20_000


def test_a_repeated_quote_is_a_flat_line_reported_once() -> None:
    detector = Stale(StaleConfig(flat_after_ms=20_000, flat_min_updates=5))
    state = detector.new_state()
    rng = random.Random(15)
    found = []
    for i in range(200):
        mid = 64_400.0 if 100 <= i < 150 else 64_400.0 + rng.uniform(-50, 50)
        finding = detector.observe_quote(state, quote(T0 + i * 1000, mid), T0 + i * 1000)
        if finding is not None:
            found.append((i, finding.value))
    assert found == [(120, 20.0)]


def test_the_wall_clock_notices_a_product_that_went_silent_once() -> None:
    detector = Stale(StaleConfig(silent_after_ms=30_000))
    state = detector.new_state()
    wall_ms = 5_000_000
    detector.observe_record(state, T0, wall_ms)
    assert detector.check_silence(state, wall_ms + 29_999) is None
    finding = detector.check_silence(state, wall_ms + 30_000)
    assert finding is not None and finding.severity is Severity.CRITICAL
    assert detector.check_silence(state, wall_ms + 90_000) is None
    # The silence was reported: records resuming after a long gap do not repeat it.
    assert detector.observe_record(state, T0 + 90_000, wall_ms + 90_000) is None
    assert detector.check_silence(state, wall_ms + 130_000) is not None


def test_the_likelihood_detector_reports_a_new_activity_regime_once() -> None:
    detector = Likelihood(LikelihoodConfig(interval_s=10), ScorerConfig(warmup=30))
    state = detector.new_state()
    rng = random.Random(16)
    calm = poisson_trades(rng, 3_000, 2.0)
    busy_from = calm[-1][0] + 1
    busy = [(busy_from + time_ms - T0, n) for time_ms, n in poisson_trades(rng, 120, 12.0)]

    found = [
        result
        for time_ms, _ in calm + busy
        if (result := detector.observe_trade(state, time_ms)) is not None
    ]

    assert len(found) == 1
    end_ms, finding = found[0]
    assert busy_from < end_ms <= busy_from + 20_000
    assert finding.value > finding.high
    assert finding.score >= 0.95
