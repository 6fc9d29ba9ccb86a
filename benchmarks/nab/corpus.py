"""Finding and loading the NAB corpus: data files, anomaly windows and profiles.

The corpus is not part of this repository. It is looked for in, in order:
``$KRAKENFEED_NAB_DIR``, ``<repo>/../shared/nab`` (where CI puts it beside the
clone) and ``/work/shared/nab``.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

ENV_VAR = "KRAKENFEED_NAB_DIR"
REPO = Path(__file__).resolve().parents[2]
FALLBACK = Path("/work/shared/nab")
WINDOWS_FILE = Path("labels") / "combined_windows.json"
PROFILES_FILE = Path("config") / "profiles.json"


class CorpusMissingError(FileNotFoundError):
    """No NAB corpus where it is looked for."""


def candidates() -> list[Path]:
    """The places looked at, in order."""
    places = [REPO.parent / "shared" / "nab", FALLBACK]
    configured = os.environ.get(ENV_VAR)
    return [Path(configured), *places] if configured else places


def locate() -> Path:
    """The first candidate that holds ``data/`` and the windows file."""
    configured = os.environ.get(ENV_VAR)
    if configured and not _is_corpus(Path(configured)):
        raise CorpusMissingError(
            f"{ENV_VAR}={configured} holds no NAB corpus (needs data/ and {WINDOWS_FILE})"
        )
    for place in candidates():
        if _is_corpus(place):
            return place
    raise CorpusMissingError(
        "NAB corpus not found (needs data/ and "
        f"{WINDOWS_FILE}); looked in {', '.join(str(p) for p in candidates())}. "
        f"Put it at {REPO.parent / 'shared' / 'nab'} or set {ENV_VAR}."
    )


def _is_corpus(place: Path) -> bool:
    return (place / "data").is_dir() and (place / WINDOWS_FILE).is_file()


@dataclass(frozen=True)
class Series:
    """One data file with its anomaly windows as inclusive row ranges."""

    name: str
    """Path under ``data/``, e.g. ``realKnownCause/nyc_taxi.csv``."""
    timestamps: list[str]
    values: list[float]
    windows: list[tuple[int, int]]

    @property
    def category(self) -> str:
        return self.name.split("/", 1)[0]

    @property
    def stem(self) -> str:
        return self.name.rsplit("/", 1)[-1]

    def labels(self) -> list[float]:
        """1.0 for rows inside a window, else 0.0."""
        labels = [0.0] * len(self.values)
        for first, last in self.windows:
            labels[first : last + 1] = [1.0] * (last - first + 1)
        return labels


@dataclass(frozen=True)
class Profile:
    name: str
    tp_weight: float
    fp_weight: float
    fn_weight: float


def load_series(root: Path) -> list[Series]:
    """Every file named in the windows file, in name order.

    A window boundary must be one of the file's timestamps, as NAB requires.
    """
    windows = json.loads((root / WINDOWS_FILE).read_text())
    corpus = []
    for name in sorted(windows):
        with (root / "data" / name).open(newline="") as f:
            reader = csv.reader(f)
            header = next(reader)
            if header[:2] != ["timestamp", "value"]:
                raise ValueError(f"{name}: header is {header}, expected timestamp,value")
            rows = list(reader)
        timestamps = [row[0] for row in rows]
        index = {datetime.fromisoformat(t): i for i, t in enumerate(timestamps)}
        ranges = []
        for start, end in windows[name]:
            try:
                ranges.append(
                    (index[datetime.fromisoformat(start)], index[datetime.fromisoformat(end)])
                )
            except KeyError as missing:
                raise ValueError(
                    f"{name}: window [{start}, {end}] names {missing}, not a timestamp of the file"
                ) from None
        corpus.append(Series(name, timestamps, [float(row[1]) for row in rows], sorted(ranges)))
    return corpus


def load_profiles(root: Path) -> list[Profile]:
    profiles = json.loads((root / PROFILES_FILE).read_text())
    return [
        Profile(
            name,
            tp_weight=float(p["CostMatrix"]["tpWeight"]),
            fp_weight=float(p["CostMatrix"]["fpWeight"]),
            fn_weight=float(p["CostMatrix"]["fnWeight"]),
        )
        for name, p in profiles.items()
    ]


def window_count(root: Path) -> int:
    """All windows of the labels file: the perfect detector's count of true positives."""
    windows = json.loads((root / WINDOWS_FILE).read_text())
    return sum(len(w) for w in windows.values())
