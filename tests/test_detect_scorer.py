"""The general univariate scorer: bounded likelihoods from the past only.

The NAB checks need the Numenta Anomaly Benchmark corpus, found as
``benchmarks.nab.corpus.locate`` finds it; without it they fail and say where it
was looked for.
"""

from __future__ import annotations

import math
import random

import msgspec
import pytest
from benchmarks.nab import corpus

from krakenfeed.detect import LikelihoodScorer, ScorerConfig, ScorerState


def noisy_sine(rng: random.Random, count: int) -> list[float]:
    return [10 + 5 * math.sin(i * 2 * math.pi / 50) + rng.gauss(0.0, 0.5) for i in range(count)]


def scores(values: list[float], config: ScorerConfig | None = None) -> list[float]:
    scorer = LikelihoodScorer(config)
    state = scorer.new_state()
    return [scorer.score(state, value) for value in values]


def test_a_steady_series_scores_nothing_during_warmup_and_every_score_is_a_likelihood() -> None:
    result = scores(noisy_sine(random.Random(1), 3_000))
    assert result[:300] == [0.0] * 300
    assert all(0.0 <= s <= 1.0 for s in result)
    assert sum(s >= 0.5 for s in result[600:]) < 0.005 * 2_400
    assert max(result[600:]) < 0.95


def test_a_spike_during_warmup_scores_once_it_has_a_range_to_leave() -> None:
    values = noisy_sine(random.Random(6), 400)
    early, later = list(values), list(values)
    early[50] = later[200] = 40.0
    assert scores(early)[50] == 0.0
    result = scores(later)
    assert result[200] >= 0.95
    assert max(result[:200] + result[201:300]) == 0.0


def test_a_spike_scores_high_and_the_values_after_it_do_not() -> None:
    values = noisy_sine(random.Random(2), 2_000)
    values[1_500] = 40.0
    result = scores(values)
    assert result[1_500] >= 0.95
    assert max(result[1_501:1_550]) < 0.5


def test_a_run_of_unfamiliar_values_inside_the_range_raises_the_likelihood() -> None:
    rng = random.Random(3)
    # Two familiar levels, 0 and 10; then values hover at an unseen 5.
    values = [rng.choice((0.0, 10.0)) + rng.gauss(0.0, 0.3) for _ in range(2_000)]
    values += [5.0 + rng.gauss(0.0, 0.3) for _ in range(50)]
    result = scores(values)
    assert max(result[2_000:2_020]) >= 0.8
    assert sum(s >= 0.5 for s in result[600:2_000]) < 0.005 * 1_400


def test_a_flat_series_scores_zero_until_it_moves() -> None:
    result = scores([3.0] * 1_000 + [3.5])
    assert result[:-1] == [0.0] * 1_000
    assert result[-1] == 1.0


def test_non_finite_values_score_zero_and_are_not_learned() -> None:
    scorer = LikelihoodScorer()
    state = scorer.new_state()
    for value in noisy_sine(random.Random(4), 400):
        scorer.score(state, value)
    before = msgspec.msgpack.encode(state)
    assert [scorer.score(state, x) for x in (math.nan, math.inf, -math.inf)] == [0.0] * 3
    assert msgspec.msgpack.encode(state) == before


def test_state_round_trips_and_stays_bounded() -> None:
    values = noisy_sine(random.Random(5), 30_000)
    values += [v + 100 for v in values]
    scorer = LikelihoodScorer(ScorerConfig(memory=5_000))
    state = scorer.new_state()
    uninterrupted = scores(values, ScorerConfig(memory=5_000))
    restored, sizes = [], []
    for value in values:
        data = msgspec.msgpack.encode(state)
        sizes.append(len(data))
        state = msgspec.msgpack.decode(data, type=ScorerState)
        restored.append(scorer.score(state, value))
    assert restored == uninterrupted
    assert max(sizes[1_000:]) < 1_300
    # Two generations of memory: the old regime is forgotten and scores again.
    assert max(scores(values[:30_000] + values[:1_000], ScorerConfig(memory=5_000))[-1_000:]) < 0.9


def test_invalid_settings_are_refused_with_the_field_named() -> None:
    with pytest.raises(ValueError, match="warmup >= 2"):
        LikelihoodScorer(ScorerConfig(warmup=1))


def nab_series(name: str) -> tuple[list[float], set[int]]:
    """The values of a NAB data file and the row indices inside its labelled windows."""
    series = next(s for s in corpus.load_series(corpus.locate()) if s.name == name)
    inside = {i for first, last in series.windows for i in range(first, last + 1)}
    return series.values, inside


@pytest.mark.parametrize(
    "name",
    [
        "realKnownCause/machine_temperature_system_failure.csv",
        "realKnownCause/ec2_request_latency_system_failure.csv",
        "artificialWithAnomaly/art_daily_jumpsup.csv",
    ],
)
def test_nab_scores_are_higher_inside_labelled_windows(name: str) -> None:
    values, inside = nab_series(name)
    result = scores(values)
    assert all(0.0 <= s <= 1.0 for s in result)
    within = [s for i, s in enumerate(result) if i in inside]
    outside = [s for i, s in enumerate(result) if i not in inside and i >= 300]
    assert max(within) >= 0.9
    assert sum(s >= 0.9 for s in outside) <= 0.002 * len(outside)
    assert sum(within) / len(within) > 1.5 * sum(outside) / len(outside)
