"""The benchmarks' bookkeeping: which frame an anomaly came from, how much memory a
process holds, and the order rounds run in."""

from __future__ import annotations

import math
import os

from benchmarks.end_to_end import received_times
from benchmarks.runner import in_turn, rss_mb
from benchmarks.tracing_overhead import _schedule


def test_an_anomaly_pairs_with_every_record_of_its_product_and_kafka_timestamp() -> None:
    records = [
        ("PF_B000USD", 1_000, 5_000_200),  # a trade and a ticker in the same millisecond
        ("PF_B000USD", 1_000, 5_000_100),
        ("PF_B000USD", 1_001, 5_900_000),
        ("PF_B001USD", 1_000, 7_000_000),
    ]
    assert received_times(records) == {
        ("PF_B000USD", 1_000): (5_000_100, 5_000_200),
        ("PF_B000USD", 1_001): (5_900_000, 5_900_000),
        ("PF_B001USD", 1_000): (7_000_000, 7_000_000),
    }


def test_resident_memory_is_read_from_proc_in_mb() -> None:
    held = bytearray(64 * 2**20)
    held[::4096] = b"\1" * len(held[::4096])  # touch every page
    current, peak = rss_mb(os.getpid(), "VmRSS"), rss_mb(os.getpid())
    assert 64 < current <= peak
    assert math.isnan(rss_mb(os.getpid(), "NoSuchField"))


def test_rounds_run_in_turn_forward_then_backward() -> None:
    assert list(in_turn(["a", "b", "c"], 3)) == [["a", "b", "c"], ["c", "b", "a"], ["a", "b", "c"]]
    # The tracing run: off and 1% in A-B-B-A pairs, 100% after the first pair only.
    assert _schedule(3, 1) == ["off", "1%", "100%", "1%", "off", "off", "1%"]
