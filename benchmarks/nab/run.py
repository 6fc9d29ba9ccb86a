"""``python -m benchmarks nab``: krakenfeed's scorer on NAB beside the windowed Gaussian.

Writes NAB-format result files (``timestamp,value,anomaly_score,label``) to
``benchmarks/results/nab/<detector>/<category>/<detector>_<file>.csv`` (generated,
not committed) and the normalised score of every profile to ``latest.json``.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks.nab import corpus, detectors
from benchmarks.nab.corpus import Series
from benchmarks.nab.scoring import NabScorer, ProfileScore
from benchmarks.runner import RESULTS, Measurement, Result, Servers, benchmark

OUTPUT = RESULTS / "nab"
KRAKENFEED = "krakenfeed"
BASELINE = "windowedGaussian"


def _run(
    detector: detectors.Detector, series: Sequence[Series]
) -> tuple[dict[str, list[float]], float]:
    """Every series' scores and the time per 1k values, in ms."""
    started = time.perf_counter()
    scores = {s.name: detector(s.values) for s in series}
    elapsed = time.perf_counter() - started
    return scores, 1e6 * elapsed / sum(len(s.values) for s in series)


def write_results(name: str, series: Sequence[Series], scores: dict[str, list[float]]) -> Path:
    for s in series:
        path = OUTPUT / name / s.category / f"{name}_{s.stem}"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["timestamp", "value", "anomaly_score", "label"])
            for row in zip(s.timestamps, s.values, scores[s.name], s.labels(), strict=True):
                writer.writerow([row[0], repr(row[1]), repr(row[2]), int(row[3])])
    return OUTPUT / name


@benchmark("nab")
def nab(servers: Servers) -> Result:
    root = corpus.locate()
    series = corpus.load_series(root)
    scorer = NabScorer(series, corpus.load_profiles(root), corpus.window_count(root))
    runs = {KRAKENFEED: detectors.krakenfeed(), BASELINE: detectors.windowed_gaussian}
    results: dict[str, dict[str, ProfileScore]] = {}
    per_1k: dict[str, float] = {}
    for name, detector in runs.items():
        scores, per_1k[name] = _run(detector, series)
        write_results(name, series, scores)
        results[name] = scorer.score(scores)
    measurements = [
        Measurement(
            metric=f"NAB {profile.name}",
            unit="score",
            krakenfeed=round(results[KRAKENFEED][profile.name].score, 2),
            baseline=round(results[BASELINE][profile.name].score, 2),
            baseline_name="windowed Gaussian",
        )
        for profile in scorer.profiles
    ]
    measurements.append(
        Measurement(
            metric="NAB scoring time",
            unit="ms per 1k values",
            krakenfeed=round(per_1k[KRAKENFEED], 2),
            baseline=round(per_1k[BASELINE], 2),
            baseline_name="windowed Gaussian",
            higher_is_better=False,
        )
    )
    return Result(
        name="nab",
        description=(
            f"Numenta Anomaly Benchmark: {len(series)} files, "
            f"{sum(len(s.values) for s in series):,} values, {scorer.total_windows} windows; "
            "krakenfeed's LikelihoodScorer (one parameter set) vs NAB's windowed Gaussian, "
            "each value scored from the past only, one core"
        ),
        measurements=measurements,
        details={
            name: {
                p: {
                    "score": round(r.score, 2),
                    "threshold": r.threshold,
                    "detected_windows": r.detected_windows,
                    "false_positive_rows": r.false_positive_rows,
                }
                for p, r in profiles.items()
            }
            for name, profiles in results.items()
        },
        headline={p: round(r.score, 2) for p, r in results[KRAKENFEED].items()},
    )
