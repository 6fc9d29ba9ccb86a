"""The market detectors: pure objects holding only their configuration.

Each detector's memory is an explicit msgspec state, created by ``new_state`` and
passed to every call, so the detector worker can persist it between records. A
call returns a ``Finding`` when the detector reports, else None; the engine turns
findings into ``Anomaly`` records.

Baselines are EWMAs of a level and of absolute deviations from it, in updates or
seconds of event time, never wall-clock time. Until a baseline has seen
``count`` ≥ 1/alpha values the EWMA is the plain mean (alpha = 1/count), and once
warm every value it learns is clipped to level ± 4 scales, so an anomaly barely
moves the baseline it is judged against.
"""

from __future__ import annotations

import math
from typing import Final

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
from krakenfeed.detect.features import (
    BPS,
    QuoteFeatures,
    TradeWindow,
    add_trade,
    new_trade_window,
    roll_trade_window,
)
from krakenfeed.detect.scorer import LikelihoodScorer, ScorerState

MAD_TO_SIGMA: Final = math.sqrt(math.pi / 2.0)
"""Mean absolute deviation × this = standard deviation, for normal noise."""
WINSOR: Final = 4.0
_MIN_RETURN_SCALE: Final = 1e-6
_MIN_SPREAD_BPS: Final = 1e-4

Context = dict[str, float | int | str | None]


class Finding(msgspec.Struct, frozen=True, kw_only=True):
    """What a detector saw: the value, the range it expected, how far off it was."""

    value: float
    low: float
    high: float
    score: float
    severity: Severity
    extra: Context | None = None


class Baseline(msgspec.Struct, kw_only=True, array_like=True, gc=False):
    """EWMA level and EWMA absolute deviation of one series."""

    level: float = 0.0
    deviation: float = 0.0
    count: int = 0


def _alpha(half_life: float) -> float:
    if half_life <= 0.0:
        raise ValueError(f"half_life must be positive, got {half_life}")
    return 1.0 - math.exp(-math.log(2.0) / half_life)


def _learn(baseline: Baseline, value: float, alpha: float, scale: float, warm: bool) -> None:
    # Hot path (several calls per record): plain comparisons beat min()/max().
    level = baseline.level
    if warm:
        bound = WINSOR * scale
        if value > level + bound:
            value = level + bound
        elif value < level - bound:
            value = level - bound
    count = baseline.count + 1
    baseline.count = count
    if alpha * count < 1.0:
        alpha = 1.0 / count
    difference = value - level
    baseline.deviation += alpha * (abs(difference) - baseline.deviation)
    baseline.level = level + alpha * difference


def _severity(score: float, threshold: float) -> Severity:
    return Severity.CRITICAL if score >= 2.0 * threshold else Severity.WARNING


class PriceJumpState(msgspec.Struct, kw_only=True, array_like=True, gc=False):
    scale: Baseline = msgspec.field(default_factory=Baseline)
    """Level = EWMA of |scaled return|."""
    typical_elapsed_ms: float = 0.0
    quiet_until_ms: int = 0


class PriceJump:
    """Robust z-score of the mid's log return against an EWMA of absolute returns."""

    name: Final = "price_jump"

    def __init__(self, config: PriceJumpConfig) -> None:
        self.config = config
        self._alpha = _alpha(config.half_life)

    def new_state(self) -> PriceJumpState:
        return PriceJumpState()

    def observe(self, state: PriceJumpState, quote: QuoteFeatures, time_ms: int) -> Finding | None:
        """Judge the return that ``quote`` just computed (call only when the mid changed)."""
        config = self.config
        log_return = quote.log_return
        elapsed = max(quote.return_elapsed_ms, 1)
        typical = state.typical_elapsed_ms
        stretch = elapsed / typical if typical > 0.0 and elapsed > typical else 1.0
        magnitude = abs(log_return) / math.sqrt(stretch) if stretch > 1.0 else abs(log_return)
        scale = state.scale
        sigma = max(MAD_TO_SIGMA * scale.level, _MIN_RETURN_SCALE)
        warm = scale.count >= config.warmup
        finding = None
        if warm:
            z = magnitude / sigma
            tripped = z >= config.threshold and abs(log_return) * BPS >= config.min_move_bps
            if tripped:
                if time_ms >= state.quiet_until_ms:
                    half_width = max(
                        config.threshold * sigma * math.sqrt(stretch), config.min_move_bps / BPS
                    )
                    previous = quote.mid / math.exp(log_return)
                    finding = Finding(
                        value=quote.mid,
                        low=previous * math.exp(-half_width),
                        high=previous * math.exp(half_width),
                        score=z,
                        severity=_severity(z, config.threshold),
                        extra={"log_return_bps": log_return * BPS, "elapsed_ms": elapsed},
                    )
                state.quiet_until_ms = time_ms + config.cooldown_ms
        _learn(scale, magnitude, self._alpha, sigma, warm)
        if typical == 0.0:
            state.typical_elapsed_ms = float(elapsed)
        else:
            state.typical_elapsed_ms += self._alpha * (min(elapsed, WINSOR * typical) - typical)
        return finding


class SpreadState(msgspec.Struct, kw_only=True, array_like=True, gc=False):
    log_spread: Baseline = msgspec.field(default_factory=Baseline)
    quiet_until_ms: int = 0


class SpreadBlowout:
    """Robust z-score of log(spread) with ratio and absolute floors."""

    name: Final = "spread_blowout"

    def __init__(self, config: SpreadBlowoutConfig) -> None:
        self.config = config
        self._alpha = _alpha(config.half_life)

    def new_state(self) -> SpreadState:
        return SpreadState()

    def observe(self, state: SpreadState, spread_bps: float, time_ms: int) -> Finding | None:
        config = self.config
        value = math.log(max(spread_bps, _MIN_SPREAD_BPS))
        baseline = state.log_spread
        scale = max(MAD_TO_SIGMA * baseline.deviation, config.min_log_dev)
        warm = baseline.count >= config.warmup
        finding = None
        if warm:
            z = (value - baseline.level) / scale
            if z >= config.rearm * config.threshold:
                usual = math.exp(baseline.level)
                tripped = (
                    z >= config.threshold
                    and spread_bps >= config.min_ratio * usual
                    and spread_bps - usual >= config.min_excess_bps
                )
                if tripped and time_ms >= state.quiet_until_ms:
                    high = max(
                        usual * math.exp(config.threshold * scale),
                        usual * config.min_ratio,
                        usual + config.min_excess_bps,
                    )
                    finding = Finding(
                        value=spread_bps,
                        low=usual * math.exp(-config.threshold * scale),
                        high=high,
                        score=z,
                        severity=_severity(z, config.threshold),
                        extra={"usual_spread_bps": usual},
                    )
                if tripped or time_ms < state.quiet_until_ms:
                    state.quiet_until_ms = time_ms + config.cooldown_ms
        _learn(baseline, value, self._alpha, scale, warm)
        return finding


class PremiumState(msgspec.Struct, kw_only=True, array_like=True, gc=False):
    basis: Baseline = msgspec.field(default_factory=Baseline)
    quiet_until_ms: int = 0


class PremiumDislocation:
    """Robust z-score of the futures basis (bps) in either direction, with a bps floor."""

    name: Final = "premium_dislocation"

    def __init__(self, config: PremiumDislocationConfig) -> None:
        self.config = config
        self._alpha = _alpha(config.half_life)

    def new_state(self) -> PremiumState:
        return PremiumState()

    def observe(self, state: PremiumState, basis_bps: float, time_ms: int) -> Finding | None:
        config = self.config
        baseline = state.basis
        scale = max(MAD_TO_SIGMA * baseline.deviation, config.min_dev_bps)
        warm = baseline.count >= config.warmup
        finding = None
        if warm:
            distance = abs(basis_bps - baseline.level)
            z = distance / scale
            if z >= config.rearm * config.threshold:
                tripped = z >= config.threshold and distance >= config.min_bps
                if tripped and time_ms >= state.quiet_until_ms:
                    half_width = max(config.threshold * scale, config.min_bps)
                    finding = Finding(
                        value=basis_bps,
                        low=baseline.level - half_width,
                        high=baseline.level + half_width,
                        score=z,
                        severity=_severity(z, config.threshold),
                    )
                if tripped or time_ms < state.quiet_until_ms:
                    state.quiet_until_ms = time_ms + config.cooldown_ms
        _learn(baseline, basis_bps, self._alpha, scale, warm)
        return finding


class TradeBurstState(msgspec.Struct, kw_only=True, array_like=True, gc=False):
    window: TradeWindow
    count_rate: Baseline = msgspec.field(default_factory=Baseline)
    """Trades per closed second."""
    notional_rate: Baseline = msgspec.field(default_factory=Baseline)
    """Notional per closed second."""
    count_limit: float = 0.0
    notional_limit: float | None = None
    """Window sums at which a burst trips, recomputed once per second; no notional
    limit while the product is too sparse to say what a usual notional is."""
    quiet_until_ms: int = 0


class TradeBurst:
    """Windowed trade count or notional against window × the EWMA rate per second."""

    name: Final = "trade_burst"

    def __init__(self, config: TradeBurstConfig) -> None:
        self.config = config
        self._alpha = _alpha(config.half_life_s)

    def new_state(self) -> TradeBurstState:
        return TradeBurstState(window=new_trade_window(self.config.window_s))

    def observe(self, state: TradeBurstState, notional: float, time_ms: int) -> Finding | None:
        config = self.config
        window = state.window
        second = time_ms // 1000
        if second > window.second:
            if window.second >= 0:
                self._close_seconds(state, second)
            roll_trade_window(window, second)
        add_trade(window, notional)
        if state.count_rate.count < config.warmup_s:
            return None
        by_count = window.count >= state.count_limit
        notional_limit = state.notional_limit
        if not by_count and (notional_limit is None or window.notional < notional_limit):
            return None
        if time_ms < state.quiet_until_ms:
            state.quiet_until_ms = time_ms + config.cooldown_ms
            return None
        state.quiet_until_ms = time_ms + config.cooldown_ms
        value: float
        if by_count:
            value, limit = window.count, state.count_limit
            expected = config.window_s * state.count_rate.level
        else:
            value, limit = window.notional, notional_limit or 0.0
            expected = config.window_s * state.notional_rate.level
        score = value / expected if expected > 0.0 else value
        return Finding(
            value=float(value),
            low=0.0,
            high=limit,
            score=score,
            severity=Severity.CRITICAL if value >= 2.0 * limit else Severity.WARNING,
            extra={"burst_by": "count" if by_count else "notional", "expected": expected},
        )

    def _close_seconds(self, state: TradeBurstState, second: int) -> None:
        window = state.window
        self._learn_second(state, window.counts[window.head], window.notionals[window.head])
        empty = second - window.second - 1
        if empty < len(window.counts):
            for _ in range(empty):
                self._learn_second(state, 0, 0.0)
        self._set_limits(state)

    def _learn_second(self, state: TradeBurstState, count: int, notional: float) -> None:
        warm = state.count_rate.count >= self.config.warmup_s
        counts, notionals = state.count_rate, state.notional_rate
        count_scale = max(MAD_TO_SIGMA * counts.deviation, math.sqrt(counts.level))
        _learn(counts, count, self._alpha, count_scale, warm)
        _learn(notionals, notional, self._alpha, MAD_TO_SIGMA * notionals.deviation, warm)

    def _set_limits(self, state: TradeBurstState) -> None:
        config = self.config
        seconds = config.window_s
        root = math.sqrt(seconds)
        counts, notionals = state.count_rate, state.notional_rate
        expected = seconds * counts.level
        spread = root * max(MAD_TO_SIGMA * counts.deviation, math.sqrt(counts.level))
        state.count_limit = max(
            expected + config.threshold * spread, config.min_ratio * expected, config.min_count
        )
        if expected < 1.0:
            state.notional_limit = None
            return
        expected_notional = seconds * notionals.level
        state.notional_limit = max(
            expected_notional + config.threshold * root * MAD_TO_SIGMA * notionals.deviation,
            config.notional_ratio * expected_notional,
        )


class StaleState(msgspec.Struct, kw_only=True, array_like=True, gc=False):
    last_event_ms: int = -1
    """Latest event time of any record of the product."""
    last_wall_ms: int = -1
    """Wall clock (the injected one) when the latest record was processed."""
    silence_reported: bool = False
    flat_bid: float = 0.0
    flat_ask: float = 0.0
    flat_bid_size: float = 0.0
    flat_ask_size: float = 0.0
    flat_since_ms: int = 0
    flat_updates: int = 0
    flat_reported: bool = False


class Stale:
    """Silence in event time (a gap between records), silence on the wall clock
    (``check_silence``), and a flat line (the same top of book, repeated).

    A silence is reported once: by ``check_silence`` while it lasts, or else by
    the gap when records resume. A flat line is reported once per frozen quote.
    """

    name: Final = "stale"
    flat_name: Final = "flat_line"

    def __init__(self, config: StaleConfig) -> None:
        self.config = config

    def new_state(self) -> StaleState:
        return StaleState()

    def observe_record(self, state: StaleState, time_ms: int, wall_ms: int) -> Finding | None:
        finding = None
        last = state.last_event_ms
        gap_ms = time_ms - last
        if last >= 0 and gap_ms >= self.config.stale_after_ms and not state.silence_reported:
            finding = Finding(
                value=gap_ms / 1000.0,
                low=0.0,
                high=self.config.stale_after_ms / 1000.0,
                score=gap_ms / self.config.stale_after_ms,
                severity=Severity.WARNING,
                extra={"kind": "gap", "last_event_ms": last},
            )
        if time_ms > last:
            state.last_event_ms = time_ms
        state.last_wall_ms = wall_ms
        state.silence_reported = False
        return finding

    def check_silence(self, state: StaleState, wall_ms: int) -> Finding | None:
        if state.last_wall_ms < 0 or state.silence_reported:
            return None
        silent_ms = wall_ms - state.last_wall_ms
        if silent_ms < self.config.silent_after_ms:
            return None
        state.silence_reported = True
        return Finding(
            value=silent_ms / 1000.0,
            low=0.0,
            high=self.config.silent_after_ms / 1000.0,
            score=silent_ms / self.config.silent_after_ms,
            severity=Severity.CRITICAL,
            extra={"kind": "silent", "last_event_ms": state.last_event_ms},
        )

    def observe_quote(self, state: StaleState, ticker: Ticker, time_ms: int) -> Finding | None:
        if (
            ticker.bid != state.flat_bid
            or ticker.ask != state.flat_ask
            or ticker.bid_size != state.flat_bid_size
            or ticker.ask_size != state.flat_ask_size
        ):
            state.flat_bid, state.flat_ask = ticker.bid, ticker.ask
            state.flat_bid_size, state.flat_ask_size = ticker.bid_size, ticker.ask_size
            state.flat_since_ms = time_ms
            state.flat_updates = 1
            state.flat_reported = False
            return None
        state.flat_updates += 1
        config = self.config
        flat_ms = time_ms - state.flat_since_ms
        if (
            state.flat_reported
            or flat_ms < config.flat_after_ms
            or state.flat_updates < config.flat_min_updates
        ):
            return None
        state.flat_reported = True
        return Finding(
            value=flat_ms / 1000.0,
            low=0.0,
            high=config.flat_after_ms / 1000.0,
            score=flat_ms / config.flat_after_ms,
            severity=Severity.WARNING,
            extra={"kind": "flat", "updates": state.flat_updates},
        )


class LikelihoodState(msgspec.Struct, kw_only=True, array_like=True, gc=False):
    scorer: ScorerState
    interval: int = -1
    """Index of the open interval (event time // interval); -1 before the first trade."""
    interval_count: int = 0
    quiet_until_ms: int = 0


class Likelihood:
    """``LikelihoodScorer`` on the number of trades per interval of event time."""

    name: Final = "likelihood"

    def __init__(self, config: LikelihoodConfig, scorer: ScorerConfig) -> None:
        if config.interval_s < 1:
            raise ValueError(f"likelihood.interval_s must be at least 1, got {config.interval_s}")
        self.config = config
        self.scorer = LikelihoodScorer(scorer)
        self._interval_ms = config.interval_s * 1000

    def new_state(self) -> LikelihoodState:
        return LikelihoodState(scorer=self.scorer.new_state())

    def observe_trade(self, state: LikelihoodState, time_ms: int) -> tuple[int, Finding] | None:
        """Count the trade; when it opens a new interval, score the finished one.

        Returns the finished interval's end time with the finding, if it reports.
        """
        interval = time_ms // self._interval_ms
        if interval <= state.interval:
            state.interval_count += 1
            return None
        finished, count = state.interval, state.interval_count
        state.interval, state.interval_count = interval, 1
        if finished < 0:
            return None
        low, high = self.scorer.expected_range(state.scorer)
        score = self.scorer.score(state.scorer, float(count))
        end_ms = (finished + 1) * self._interval_ms
        config = self.config
        if score < config.threshold:
            return None
        quiet = end_ms < state.quiet_until_ms
        state.quiet_until_ms = end_ms + config.cooldown_ms
        if quiet:
            return None
        return end_ms, Finding(
            value=float(count),
            low=low,
            high=high,
            score=score,
            severity=Severity.WARNING,
            extra={"interval_s": config.interval_s},
        )
