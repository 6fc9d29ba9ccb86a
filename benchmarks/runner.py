"""Registry, shared servers and result files for the benchmarks."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TypeVar

from krakenfeed.embedded import EmbeddedKafka, EmbeddedPostgres

RESULTS = Path(__file__).parent / "results"


_Server = TypeVar("_Server")


class Servers:
    """The broker and database, each started when a benchmark first asks for it
    (``nab`` needs neither) and stopped when the run ends.

    The measured client is pinned to one core and the servers to the others, so
    that a server busy with the client's work (PostgreSQL storing its rows, the
    broker serving its fetches) does not take that core from the client. With a
    single core they share it.
    """

    def __init__(self, stack: ExitStack, cores: set[int]) -> None:
        self._stack = stack
        self._cores = cores

    @cached_property
    def kafka(self) -> EmbeddedKafka:
        return self._start(EmbeddedKafka())

    @cached_property
    def postgres(self) -> EmbeddedPostgres:
        # Commit times let the end-to-end benchmark time each row's commit itself.
        settings = {"track_commit_timestamp": "on"}
        return self._start(EmbeddedPostgres(durable=False, settings=settings))

    def _start(self, server: AbstractContextManager[_Server]) -> _Server:
        pinned = os.sched_getaffinity(0)
        os.sched_setaffinity(0, self._cores)
        try:
            return self._stack.enter_context(server)
        finally:
            os.sched_setaffinity(0, pinned)


def other_cores() -> set[int]:
    """The cores the servers run on: every core but the measured client's."""
    measured = max(os.sched_getaffinity(0))
    return {c for c in range(os.cpu_count() or 1) if c != measured} or {measured}


def in_turn(names: Sequence[str], rounds: int) -> Iterator[list[str]]:
    """Each round's running order of ``names``: forward, then backward (A-B-B-A…),
    so that a machine drifting over the run weighs on every name alike."""
    for round_ in range(rounds):
        yield list(names) if round_ % 2 == 0 else list(names)[::-1]


def rss_mb(pid: int, field: str = "VmHWM") -> float:
    """A process's peak (``VmHWM``) or current (``VmRSS``) resident memory, in MB;
    NaN once it has exited."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return float("nan")
    for line in status.splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@dataclass
class Measurement:
    """One quantity measured for krakenfeed and for its baseline in the same run."""

    metric: str
    unit: str
    krakenfeed: float
    baseline: float
    baseline_name: str
    higher_is_better: bool = True
    target_ratio: float | None = None
    """The ratio krakenfeed/baseline the issue asks for, when it sets one."""

    @property
    def ratio(self) -> float:
        return self.krakenfeed / self.baseline if self.baseline else float("nan")

    @property
    def verdict(self) -> str:
        if self.target_ratio is None:
            return ""
        met = (
            self.ratio >= self.target_ratio
            if self.higher_is_better
            else self.ratio <= self.target_ratio
        )
        return "met" if met else "MISSED"


@dataclass
class Result:
    name: str
    description: str
    measurements: list[Measurement]
    details: dict[str, object] = field(default_factory=dict)
    seconds: float = 0.0
    headline: dict[str, object] | None = None
    """Also stored at the top of latest.json under the benchmark's name."""


Benchmark = Callable[[Servers], Result]
REGISTRY: dict[str, Benchmark] = {}


def benchmark(name: str) -> Callable[[Benchmark], Benchmark]:
    def register(function: Benchmark) -> Benchmark:
        REGISTRY[name] = function
        return function

    return register


def machine() -> dict[str, object]:
    cpu = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    ram_gb = 0.0
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_gb = round(int(line.split()[1]) / 2**20, 1)
                break
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gb": ram_gb,
        "affinity": sorted(os.sched_getaffinity(0)),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def run(names: list[str]) -> list[Result]:
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        raise SystemExit(f"unknown benchmark(s) {unknown}; known: {', '.join(REGISTRY)}")
    selected = names or list(REGISTRY)
    results = []
    with ExitStack() as stack:
        cores = os.sched_getaffinity(0)
        client = max(cores)
        servers = Servers(stack, cores - {client} or cores)
        os.sched_setaffinity(0, {client})
        for name in selected:
            started = time.perf_counter()
            result = REGISTRY[name](servers)
            result.seconds = round(time.perf_counter() - started, 2)
            results.append(result)
            print(render_markdown([result], header=False), flush=True)
    return results


def _fmt(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.3g}"


def render_markdown(results: list[Result], header: bool = True) -> str:
    lines = []
    if header:
        info = machine()
        lines += [
            "# Benchmark results",
            "",
            f"{info['date']} · {info['cpu']} · {info['cores']} cores · "
            f"{info['ram_gb']} GB RAM · Python {info['python']}",
            "",
        ]
    lines += [
        "| benchmark | metric | krakenfeed | baseline | ratio | target |",
        "|---|---|---:|---:|---:|---|",
    ]
    for result in results:
        for m in result.measurements:
            target = "" if m.target_ratio is None else f"≥ {m.target_ratio}× ({m.verdict})"
            if m.target_ratio is not None and not m.higher_is_better:
                target = f"≤ {m.target_ratio}× ({m.verdict})"
            lines.append(
                f"| {result.name} | {m.metric} ({m.unit}) | {_fmt(m.krakenfeed)} "
                f"| {_fmt(m.baseline)} ({m.baseline_name}) | {m.ratio:.2f}× | {target} |"
            )
    return "\n".join(lines)


def write_results(results: list[Result]) -> None:
    """Merge into latest.json (so one benchmark can be re-run alone) and rewrite latest.md."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "latest.json"
    stored = json.loads(path.read_text()) if path.exists() else {"results": {}}
    stored["machine"] = machine()
    for result in results:
        entry = asdict(result)
        for data, m in zip(entry["measurements"], result.measurements, strict=True):
            data["ratio"] = round(m.ratio, 4)
            data["verdict"] = m.verdict
        stored["results"][result.name] = entry
        if result.headline is not None:
            stored[result.name] = result.headline
    path.write_text(json.dumps(stored, indent=2) + "\n")
    everything = [
        Result(
            name=r["name"],
            description=r["description"],
            details=r["details"],
            seconds=r["seconds"],
            headline=r.get("headline"),
            measurements=[
                Measurement(**{k: v for k, v in m.items() if k not in ("ratio", "verdict")})
                for m in r["measurements"]
            ],
        )
        for r in stored["results"].values()
    ]
    (RESULTS / "latest.md").write_text(render_markdown(everything) + "\n")
