"""A general univariate streaming scorer: one anomaly likelihood in [0, 1] per value.

It knows nothing about markets. Each value is judged against the past only, then
learned; the state is bounded (two fixed-size bit sets and a few numbers) and
round-trips through msgspec.

How a value is scored:

1. **Quantisation.** The first ``warmup`` values are buffered; their range cut
   into ``levels`` gives a fixed step, so a level means the same thing forever
   (re-scaling later would make every remembered level meaningless). Values far
   outside the warm-up range simply get new level numbers. From the
   ``early_after``-th buffered value on, a value is already judged by range (4.)
   against the values buffered so far; nothing else scores during warm-up.
2. **Novelty.** The value's level, and the levels at 2×, 4×, … the step, are
   looked up in a hashed set of levels seen before; novelty is the fraction not
   seen. Coarser resolutions make a near-miss partly familiar. The set has two
   generations that rotate every ``memory`` values, so the scorer forgets levels
   the series has left long ago and the bits never saturate.
3. **Likelihood.** A single novel level is common in a noisy series; a run of
   them is not. The mean novelty of the last ``short_window`` values is compared
   with the long-run mean and variance of that same average (EWMA, its standard
   deviation floored at 0.01): with ``p`` twice the normal upper tail of that
   z-score (1 at the mean), the score is ``0.9 × min(1, log10(1/p) / 10)``, so
   scores below 0.9 grade how improbable the recent novelty is.
4. **Range.** A value beyond the remembered minimum/maximum by more than
   ``range_margin`` of the range scores ``0.9 + 0.1 × excess/range`` (at most 1):
   new extremes outrank any amount of novelty inside the range.
5. **One score per episode.** A score that does not beat the last peak within
   ``refractory`` values is halved, and so is every score in the ``rest`` values
   after one of at least ``alarm``: an anomaly is reported by its first values
   rather than by every value while the scorer re-learns.

The defaults were tuned on the whole NAB corpus (one parameter set for every
file; see ``benchmarks/nab``), which makes its NAB score an in-sample figure.
"""

from __future__ import annotations

import math
from typing import Final

import msgspec

from krakenfeed.detect.config import ScorerConfig

_SQRT2: Final = math.sqrt(2.0)
_DECADES: Final = 10.0
"""log10(1/p) that maps to the top of the likelihood band."""
_LIKELIHOOD_CEILING: Final = 0.9
_MIN_SCALE: Final = 0.01
"""Floor of the novelty average's standard deviation (a series that never surprises)."""
_SUPPRESSED: Final = 0.5
_HASH_A: Final = 0x9E3779B1
_HASH_B: Final = 0x85EBCA77
_MASK32: Final = 0xFFFFFFFF


class ScorerState(msgspec.Struct, kw_only=True, array_like=True, gc=False):
    """Everything ``LikelihoodScorer`` remembers about one series."""

    warmup_values: list[float] = msgspec.field(default_factory=list)
    """Emptied once the step is fixed."""
    step: float = 0.0
    """Quantisation step; 0.0 while warming up."""
    seen: bytearray = msgspec.field(default_factory=bytearray)
    seen_before: bytearray = msgspec.field(default_factory=bytearray)
    """The previous generation of ``seen``."""
    generation_age: int = 0
    low: float = 0.0
    high: float = 0.0
    low_before: float = 0.0
    high_before: float = 0.0
    recent: list[float] = msgspec.field(default_factory=list)
    """Ring of the last novelties; ``recent_at`` is the next slot to overwrite."""
    recent_at: int = 0
    scored: int = 0
    mean: float = 0.0
    variance: float = 0.0
    peak: float = 0.0
    peak_age: int = 0
    since_alarm: int = 1 << 30
    """Values since the last score of at least ``alarm``, counted up to ``rest``."""


class LikelihoodScorer:
    """Scores a series value by value; all memory lives in a ``ScorerState``."""

    def __init__(self, config: ScorerConfig | None = None) -> None:
        self.config = config = config or ScorerConfig()
        if config.warmup < 2 or config.levels < 1 or config.memory_bits < 8:
            raise ValueError(
                f"ScorerConfig needs warmup >= 2, levels >= 1 and memory_bits >= 8; got {config}"
            )
        self._alpha = 1.0 - math.exp(-math.log(2.0) / config.long_half_life)
        self._bytes = (config.memory_bits + 7) // 8

    def new_state(self) -> ScorerState:
        return ScorerState()

    def score(self, state: ScorerState, value: float) -> float:
        """The likelihood that ``value`` is anomalous given the past; then learn it.

        Non-finite values score 0.0 and are not learned.
        """
        if not math.isfinite(value):
            return 0.0
        warming_up = state.step == 0.0
        score = self._warmup_score(state, value) if warming_up else self._judge(state, value)
        return self._one_per_episode(state, score)

    def _warmup_score(self, state: ScorerState, value: float) -> float:
        """Buffer the value; once ``early_after`` are held, judge it by range alone."""
        values = state.warmup_values
        score = 0.0
        if len(values) >= self.config.early_after:
            score = self._beyond_range(value, min(values), max(values))
        values.append(value)
        if len(values) >= self.config.warmup:
            self._finish_warmup(state)
        return score

    def _beyond_range(self, value: float, low: float, high: float) -> float:
        excess = max(value - high, low - value)
        width = high - low
        if width <= 0.0:
            return 1.0 if excess > 0.0 else 0.0
        if excess > self.config.range_margin * width:
            return min(1.0, _LIKELIHOOD_CEILING + 0.1 * excess / width)
        return 0.0

    def _judge(self, state: ScorerState, value: float) -> float:
        config = self.config
        novelty = self._learn_level(state, value)
        beyond_range = self._beyond_range(
            value, min(state.low, state.low_before), max(state.high, state.high_before)
        )
        if value < state.low:
            state.low = value
        elif value > state.high:
            state.high = value
        state.generation_age += 1
        if state.generation_age >= config.memory:
            self._rotate(state, value)

        recent = state.recent
        recent[state.recent_at] = novelty
        state.recent_at = (state.recent_at + 1) % len(recent)
        average = sum(recent) / len(recent)
        state.scored += 1
        alpha = max(self._alpha, 1.0 / state.scored)
        deviation = average - state.mean
        z = deviation / max(math.sqrt(state.variance), _MIN_SCALE)
        state.mean += alpha * deviation
        state.variance = (1.0 - alpha) * (state.variance + alpha * deviation * deviation)
        # Twice the upper tail: 1 at the long-run mean, so unremarkable values score 0.
        tail = min(max(math.erfc(z / _SQRT2), 1e-300), 1.0)
        likelihood = _LIKELIHOOD_CEILING * min(1.0, math.log10(1.0 / tail) / _DECADES)
        return max(likelihood, beyond_range)

    def _one_per_episode(self, state: ScorerState, score: float) -> float:
        config = self.config
        resting = state.since_alarm < config.rest
        if resting:
            state.since_alarm += 1
        if score > state.peak or state.peak_age >= config.refractory:
            state.peak = score
            state.peak_age = 0
        else:
            state.peak_age += 1
            resting = True
        if resting:
            score *= _SUPPRESSED
        if score >= config.alarm:
            state.since_alarm = 0
        return score

    def expected_range(self, state: ScorerState) -> tuple[float, float]:
        """The remembered range, widened by the margin that separates new extremes."""
        low = min(state.low, state.low_before)
        high = max(state.high, state.high_before)
        margin = self.config.range_margin * (high - low)
        return low - margin, high + margin

    def _finish_warmup(self, state: ScorerState) -> None:
        values = state.warmup_values
        low, high = min(values), max(values)
        if high > low:
            state.step = (high - low) / self.config.levels
        else:
            state.step = abs(low) * 0.01 or 1.0
        state.seen = bytearray(self._bytes)
        state.seen_before = bytearray(self._bytes)
        state.low = state.low_before = low
        state.high = state.high_before = high
        state.recent = [0.0] * self.config.short_window
        for value in values:
            self._learn_level(state, value)
        state.warmup_values = []

    def _learn_level(self, state: ScorerState, value: float) -> float:
        """Mark the value's levels as seen; return the fraction that were new."""
        level = math.floor(value / state.step)
        seen, seen_before = state.seen, state.seen_before
        bits = self.config.memory_bits
        new = 0
        resolutions = self.config.resolutions
        for shift in range(resolutions):
            slot = (((level >> shift) * _HASH_A) ^ (shift * _HASH_B)) & _MASK32
            slot %= bits
            index, bit = slot >> 3, 1 << (slot & 7)
            if not (seen[index] & bit or seen_before[index] & bit):
                new += 1
            seen[index] |= bit
        return new / resolutions

    def _rotate(self, state: ScorerState, value: float) -> None:
        state.seen_before = state.seen
        state.seen = bytearray(self._bytes)
        state.low_before, state.high_before = state.low, state.high
        state.low = state.high = value
        state.generation_age = 0
