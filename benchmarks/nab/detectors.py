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
PUBLISHED_DIGITS = 12
"""Significant digits of the scores in NAB's published windowed Gaussian results.

NAB's runner wrote its result files under Python 2, whose ``str(float)`` keeps 12
significant digits, and its scorer reads the scores back from those files. A score
within 5e-13 of 1 (``|z|`` beyond about 7.13) was therefore stored as exactly 1.0,
which is the threshold NAB's optimiser picked for every profile: those rows are the
published run's detections. At ``|z|`` = 7.1, ``1 - Q`` = 0.99999999999938 was stored
as 0.999999999999 and is not one.
"""


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
    deviation of the values before it, ``Q`` being the normal upper tail
    ``erfc(z / √2) / 2``: every value until ``GAUSSIAN_WINDOW`` are held, then the
    window slides ``GAUSSIAN_STEP`` values at a time. The first value scores 0.
    Each score is kept to ``PUBLISHED_DIGITS`` significant digits, as NAB's
    published result files hold it.
    """
    scores = []
    window: list[float] = []
    pending: list[float] = []
    mean, squares = 0.0, 0.0
    std = 1.0
    for value in values:
        if window:
            tail = 0.5 * math.erfc(abs(value - mean) / std / math.sqrt(2.0))
            scores.append(float(f"{1.0 - tail:.{PUBLISHED_DIGITS}g}"))
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
