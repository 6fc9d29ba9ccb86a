"""What the NAB benchmark scores: krakenfeed's scorer and NAB's reference detectors.

Every detector maps a series' values to one anomaly score in [0, 1] per value,
computed from that value and the ones before it; labels never reach a detector.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from krakenfeed.detect import LikelihoodScorer, ScorerConfig

Detector = Callable[[Sequence[float]], list[float]]

GAUSSIAN_WINDOW = 6400
GAUSSIAN_STEP = 100
_MIN_STD = 1e-6
_TAIL = [0.5 * math.erfc(k / 10.0 / math.sqrt(2.0)) for k in range(71)]
"""The normal upper tail Q(z) at z = 0, 0.1, … 7.0."""


def krakenfeed(config: ScorerConfig | None = None) -> Detector:
    """The detector's ``LikelihoodScorer``, one fresh state per series."""
    scorer = LikelihoodScorer(config)

    def detect(values: Sequence[float]) -> list[float]:
        state = scorer.new_state()
        return [scorer.score(state, value) for value in values]

    return detect


def windowed_gaussian(values: Sequence[float]) -> list[float]:
    """NAB's windowed Gaussian baseline, re-implemented as its published results score.

    A value scores ``1 - Q(|z|)`` against the mean and population standard
    deviation of the values before it: every value until ``GAUSSIAN_WINDOW`` are
    held, then the window slides ``GAUSSIAN_STEP`` values at a time. As in the
    published runs, the normal tail ``Q`` is read from a table at steps of 0.1 in
    ``z`` (``|z|`` rounded to the nearest step) and is 0 beyond ``|z|`` = 7. The
    first value scores 0.
    """
    scores = []
    window: list[float] = []
    pending: list[float] = []
    mean, squares = 0.0, 0.0
    std = 1.0
    for value in values:
        if window:
            step = round(abs(value - mean) / std * 10.0)
            scores.append(1.0 - _TAIL[step] if step < len(_TAIL) else 1.0)
        else:
            scores.append(0.0)
        if len(window) < GAUSSIAN_WINDOW:
            # Growing: Welford's update stands in for recomputing the whole window.
            window.append(value)
            delta = value - mean
            mean += delta / len(window)
            squares += delta * (value - mean)
        else:
            pending.append(value)
            if len(pending) < GAUSSIAN_STEP:
                continue
            window = window[GAUSSIAN_STEP:] + pending
            pending = []
            mean = math.fsum(window) / len(window)
            squares = math.fsum((x - mean) ** 2 for x in window)
        std = math.sqrt(max(squares, 0.0) / len(window)) or _MIN_STD
    return scores


def null(values: Sequence[float]) -> list[float]:
    """Never alarms: NAB's zero point."""
    return [0.0] * len(values)
