"""Per-feed detector settings, each with a documented default.

Every threshold is a robust z-score: a deviation divided by 1.2533 × the EWMA of
absolute deviations, which equals the standard deviation for normal noise and
tolerates outliers far better than a running variance. Floors in market units
(bps, ratios, counts) keep a detector quiet when the noise is tiny (a one-tick
spread, an idle product), where any z-score would be huge.

Episodes: a detector reports the first value that crosses its threshold, then
stays quiet until ``cooldown_ms`` of event time have passed since the last value
that still crossed it (for spreads and premiums, since the last value above
``rearm`` × threshold). One blowout, burst or dislocation therefore yields one
anomaly; stale and flat-line findings are reported once per silence or frozen
quote.
"""

from __future__ import annotations

import msgspec


class _Config(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    enabled: bool = True


class PriceJumpConfig(_Config, frozen=True, kw_only=True):
    """A log return of the mid price far outside the recent return scale.

    Returns are taken between distinct mids and scaled to the typical time between
    mid changes (diffusion: √time), so the first move after a quiet or dead spell
    is not mistaken for a jump.
    """

    threshold: float = 10.0
    """Robust z-score of the scaled return."""
    min_move_bps: float = 10.0
    """A smaller move never counts, however calm the market was."""
    half_life: float = 300.0
    """Half-life of the return scale, in mid changes."""
    warmup: int = 60
    """Mid changes to observe before the first report."""
    cooldown_ms: int = 10_000


class SpreadBlowoutConfig(_Config, frozen=True, kw_only=True):
    """The bid-ask spread far above its recent level, measured on log(spread)."""

    threshold: float = 5.0
    """Robust z-score of log(spread) against its EWMA level."""
    min_ratio: float = 3.0
    """The spread must also be this multiple of its baseline level."""
    min_excess_bps: float = 1.0
    """...and exceed the baseline by this much, so one-tick markets stay quiet."""
    min_log_dev: float = 0.05
    """Floor of the log-spread scale (a 5 % wiggle) for spreads that never move."""
    half_life: float = 300.0
    """Half-life of the baseline, in ticker updates."""
    warmup: int = 60
    rearm: float = 0.5
    cooldown_ms: int = 10_000


class TradeBurstConfig(_Config, frozen=True, kw_only=True):
    """Trade count or notional over the last ``window_s`` seconds far above the usual rate.

    The baseline is the EWMA rate per second of event time, fed one closed second
    at a time (quiet seconds count as zero); seconds skipped by a gap longer than
    the window are not fed, because a dead feed says nothing about the usual rate.
    """

    window_s: int = 5
    """Rolling horizon, in one-second buckets (the only ring kept in state)."""
    threshold: float = 6.0
    """Robust z-score of the windowed count (or notional) against window × rate."""
    min_ratio: float = 3.0
    """The count must also reach this multiple of its expected value..."""
    min_count: int = 20
    """...and this many trades, so a sparse product needs a real burst."""
    notional_ratio: float = 10.0
    """Notional is heavy-tailed (one large order): it must reach this multiple."""
    half_life_s: float = 300.0
    warmup_s: int = 60
    cooldown_ms: int = 10_000


class PremiumDislocationConfig(_Config, frozen=True, kw_only=True):
    """Futures basis (mark vs index, in bps) far from its recent level.

    The basis is ``(mark - index) / index`` when both prices are present, else
    Kraken's ``premium`` field (a percentage).
    """

    threshold: float = 8.0
    """Robust z-score of the basis against its EWMA level."""
    min_bps: float = 15.0
    """The basis must also move this far from its level."""
    min_dev_bps: float = 0.5
    """Floor of the basis scale."""
    half_life: float = 300.0
    """Half-life of the level, in ticker updates."""
    warmup: int = 60
    rearm: float = 0.5
    cooldown_ms: int = 10_000


class StaleConfig(_Config, frozen=True, kw_only=True):
    """A product that stopped updating (silence) or repeats one quote (flat line)."""

    stale_after_ms: int = 15_000
    """An event-time gap this long between two records of a product is reported."""
    silent_after_ms: int = 30_000
    """``check_stale``: no record processed for this long on the injected wall clock."""
    flat_after_ms: int = 20_000
    """Identical top of book (prices and sizes) for this long of event time..."""
    flat_min_updates: int = 5
    """...over at least this many ticker updates is a flat line."""


class LikelihoodConfig(_Config, frozen=True, kw_only=True):
    """The general univariate scorer, run on the trade count per ``interval_s``.

    Trade activity is the product's most general health signal; intervals without
    any trade are not scored (silence is the stale detector's finding).
    """

    interval_s: int = 10
    threshold: float = 0.95
    """Scores from 0.9 up mean a count beyond the remembered range; 0.95 asks for an
    excess of half that range (see ``krakenfeed.detect.scorer``)."""
    cooldown_ms: int = 60_000


class ScorerConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Settings of ``LikelihoodScorer``; the defaults were chosen on the NAB corpus."""

    warmup: int = 300
    """Values buffered to choose the quantisation step before the first score."""
    levels: int = 32
    """The warm-up range is cut into this many levels; the step then stays fixed."""
    resolutions: int = 2
    """Levels are also looked up at 2×, 4×, … the step, so near-misses count as partly familiar."""
    memory_bits: int = 4096
    """Bits per generation of the hashed set of seen levels."""
    memory: int = 20_000
    """Values per generation; two generations are kept, so levels not seen for
    between one and two generations become novel again."""
    short_window: int = 4
    """Values averaged into the recent novelty that the likelihood judges."""
    long_half_life: float = 800.0
    """Half-life, in values, of the novelty's long-run mean and variance."""
    range_margin: float = 0.05
    """A value beyond the remembered range by this fraction of it scores ≥ 0.9."""
    refractory: int = 100
    """A score that does not beat the last peak within this many values is halved."""
    early_after: int = 100
    """Warm-up values held before a value beyond their range already scores."""
    alarm: float = 0.5
    rest: int = 20
    """Scores in the ``rest`` values after one of at least ``alarm`` are halved."""


class DetectorConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Everything the detector worker needs to know about one feed's detectors."""

    price_jump: PriceJumpConfig = PriceJumpConfig()
    spread_blowout: SpreadBlowoutConfig = SpreadBlowoutConfig()
    trade_burst: TradeBurstConfig = TradeBurstConfig()
    premium_dislocation: PremiumDislocationConfig = PremiumDislocationConfig()
    stale: StaleConfig = StaleConfig()
    likelihood: LikelihoodConfig = LikelihoodConfig()
    scorer: ScorerConfig = ScorerConfig()
