"""NAB's score: anomaly windows, a scaled sigmoid, one threshold per profile.

The rules, as NAB v1.1 defines them:

- **Probation.** The first ``min(floor(0.15 × rows), 750)`` rows of a file are not
  scored at all.
- **Inside a window** (first..last, width ``w`` rows), a detection at row ``i`` is
  worth ``S(-(last - i + 1) / w) / S(-1)`` × tpWeight, where
  ``S(x) = 2 / (1 + e^(5x)) - 1``: 1 at the window's first row, falling towards 0 at
  its end. Only the best (earliest) detection of a window counts; a window without
  one costs fnWeight.
- **Outside windows**, a detection is a false positive worth
  ``S((i - last) / (w - 1))`` × fpWeight, measured from the end of the previous window
  (mildly negative just after a window, -1 far from it; ``S`` is -1 from 3 on), and a
  full -fpWeight before the first window.
- **Threshold.** A row is a detection when its anomaly score is ≥ the threshold. Per
  profile, the threshold is the one that maximises the summed score of the whole
  corpus, sweeping every distinct anomaly score from the top (the highest threshold
  wins a tie).
- **Normalisation.** ``100 × (raw - null) / (perfect - null)``: ``null`` is the null
  detector's raw score under the same optimisation and ``perfect`` is tpWeight × the
  number of windows in the labels file.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from benchmarks.nab.corpus import Profile, Series

PROBATION_PERCENT = 0.15
PROBATION_CAP_ROWS = 5000
"""The probation is 15 % of the file, but never more than 15 % of this many rows."""
START_THRESHOLD = 1.1
"""Above every anomaly score: the first step of the sweep detects nothing."""


def probation_length(rows: int) -> float:
    return min(math.floor(PROBATION_PERCENT * rows), PROBATION_PERCENT * PROBATION_CAP_ROWS)


def scaled_sigmoid(position: float) -> float:
    """``2 × sigmoid(-5 × position) - 1``, and -1 from 3 on (far past a window)."""
    if position >= 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * position)) - 1.0


_EARLIEST = scaled_sigmoid(-1.0)


@dataclass(frozen=True)
class Step:
    """The corpus at one threshold: what the rows scoring at least that much earn."""

    threshold: float
    tp_credit: float
    """Sum over detected windows of their best detection's unweighted worth."""
    detected: int
    fp_credit: float
    """Sum of the (negative) unweighted worth of every false positive row."""
    fp_rows: int

    def raw(self, profile: Profile, windows: int) -> float:
        return (
            profile.tp_weight * self.tp_credit
            - profile.fn_weight * (windows - self.detected)
            + profile.fp_weight * self.fp_credit
        )


@dataclass(frozen=True)
class ProfileScore:
    profile: str
    threshold: float
    raw: float
    null: float
    perfect: float
    detected_windows: int
    missed_windows: int
    false_positive_rows: int

    @property
    def score(self) -> float:
        """Normalised: the null detector 0, the perfect detector 100."""
        return 100.0 * (self.raw - self.null) / (self.perfect - self.null)


class NabScorer:
    """Scores a detector's anomaly scores over the whole corpus, for every profile."""

    def __init__(self, corpus: Sequence[Series], profiles: Sequence[Profile], windows: int):
        """``windows``: every window of the labels file (the perfect score's count)."""
        self.corpus = list(corpus)
        self.profiles = list(profiles)
        self.total_windows = windows
        # The worth of each scored row (after probation) if detected, file after file,
        # and its window (a corpus-wide id) or -1 outside windows.
        self._credit: list[float] = []
        self._window: list[int] = []
        window_ids = 0
        for series in self.corpus:
            window_ids = self._add_rows(series, window_ids)
        self._window_ids = window_ids
        self.scored_windows = len({w for w in self._window if w >= 0})
        """Windows with a scored row: each one missed costs fnWeight."""
        null = self.sweep({s.name: [0.0] * len(s.values) for s in self.corpus})
        self.null_raw = {
            p.name: max(step.raw(p, self.scored_windows) for step in null) for p in profiles
        }

    def _add_rows(self, series: Series, window_id: int) -> int:
        """Record each scored row's worth; return the next free window id."""
        probation = probation_length(len(series.values))
        windows = list(series.windows)
        current: tuple[int, int] | None = None
        previous: tuple[int, int] | None = None
        for i in range(len(series.values)):
            if current is None and windows and i == windows[0][0]:
                current = windows.pop(0)
                window_id += 1
            if current is not None:
                first, last = current
                worth = scaled_sigmoid(-(last - i + 1) / (last - first + 1)) / _EARLIEST
            elif previous is None:
                worth = scaled_sigmoid(3.0)
            else:
                first, last = previous
                width = last - first + 1
                worth = scaled_sigmoid((i - last) / (width - 1) if width > 1 else math.inf)
            if i >= probation:
                self._credit.append(worth)
                self._window.append(window_id - 1 if current is not None else -1)
            if current is not None and i == current[1]:
                previous, current = current, None
        return window_id

    def _flatten(self, scores: Mapping[str, Sequence[float]]) -> list[float]:
        flat: list[float] = []
        for series in self.corpus:
            values = scores.get(series.name)
            if values is None:
                raise ValueError(f"no anomaly scores for {series.name}")
            if len(values) != len(series.values):
                raise ValueError(
                    f"{series.name}: {len(values)} anomaly scores for {len(series.values)} rows"
                )
            for i, value in enumerate(values):
                if not 0.0 <= value <= 1.0:
                    raise ValueError(f"{series.name} row {i}: anomaly score {value} not in [0, 1]")
            probation = probation_length(len(values))
            flat.extend(v for i, v in enumerate(values) if i >= probation)
        return flat

    def sweep(self, scores: Mapping[str, Sequence[float]]) -> list[Step]:
        """The corpus score at every distinct threshold, highest threshold first."""
        flat = self._flatten(scores)
        credit, window = self._credit, self._window
        best = [0.0] * self._window_ids
        tp_credit, detected, fp_credit, fp_rows = 0.0, 0, 0.0, 0
        threshold = START_THRESHOLD
        steps = []
        for row in sorted(range(len(flat)), key=flat.__getitem__, reverse=True):
            if flat[row] != threshold:
                steps.append(Step(threshold, tp_credit, detected, fp_credit, fp_rows))
                threshold = flat[row]
            w = window[row]
            if w < 0:
                fp_credit += credit[row]
                fp_rows += 1
            elif credit[row] > best[w]:
                if best[w] == 0.0:
                    detected += 1
                tp_credit += credit[row] - best[w]
                best[w] = credit[row]
        steps.append(Step(threshold, tp_credit, detected, fp_credit, fp_rows))
        return steps

    def score(self, scores: Mapping[str, Sequence[float]]) -> dict[str, ProfileScore]:
        """Each profile's optimal threshold and its normalised score."""
        steps = self.sweep(scores)
        results = {}
        for profile in self.profiles:
            best = max(steps, key=lambda step: step.raw(profile, self.scored_windows))
            results[profile.name] = ProfileScore(
                profile=profile.name,
                threshold=best.threshold,
                raw=best.raw(profile, self.scored_windows),
                null=self.null_raw[profile.name],
                perfect=profile.tp_weight * self.total_windows,
                detected_windows=best.detected,
                missed_windows=self.scored_windows - best.detected,
                false_positive_rows=best.fp_rows,
            )
        return results
