"""Exactly-once admission of trades across snapshots and reconnects, in bounded memory.

Kraken numbers trades per product with ids that only grow (spot ``trade_id``,
futures ``seq``), and re-sends its recent trades on every (re)subscribe. So a
product needs no set of every id seen: a **high-water mark** says that anything at
or below it was either emitted or skipped, and a short list of **holes** remembers
the ranges that were skipped (a sequence gap), so that a later snapshot which
carries a missed trade still gets it through exactly once.

The bound: per product, one int for the mark plus at most ``max_holes`` ranges of
two ints. With the default 64 holes that is under 3 KiB per product whatever the
trade rate or the uptime. When more gaps are open than that, the oldest range is
forgotten first: a trade from it arriving later would be taken for a duplicate.
"""

from __future__ import annotations

from bisect import bisect_right

DEFAULT_MAX_HOLES = 64


class IdMemory:
    def __init__(self, max_holes: int = DEFAULT_MAX_HOLES) -> None:
        if max_holes < 0:
            raise ValueError(f"max_holes must be >= 0, got {max_holes}")
        self.max_holes = max_holes
        self.last: dict[str, int] = {}
        """The high-water mark per product."""
        self.holes: dict[str, list[tuple[int, int]]] = {}
        """Per product, the skipped ids below the mark as inclusive ranges, ascending."""

    def admit(self, product: str, trade_id: int) -> int | None:
        """None for an id already emitted; otherwise how many ids were skipped right
        before it (0 in sequence, or when it fills a hole)."""
        last = self.last.get(product)
        if last is None or trade_id == last + 1:
            self.last[product] = trade_id
            return 0
        if trade_id > last:
            self.last[product] = trade_id
            self._open(product, last + 1, trade_id - 1)
            return trade_id - last - 1
        return 0 if self._fill(product, trade_id) else None

    def _open(self, product: str, first: int, end: int) -> None:
        if not self.max_holes:
            return
        holes = self.holes.setdefault(product, [])
        holes.append((first, end))
        if len(holes) > self.max_holes:
            del holes[0]

    def _fill(self, product: str, trade_id: int) -> bool:
        holes = self.holes.get(product)
        if not holes:
            return False
        index = bisect_right(holes, trade_id, key=_first) - 1
        if index < 0 or trade_id > holes[index][1]:
            return False
        first, end = holes[index]
        pieces = [(a, b) for a, b in ((first, trade_id - 1), (trade_id + 1, end)) if a <= b]
        holes[index : index + 1] = pieces
        return True


def _first(hole: tuple[int, int]) -> int:
    return hole[0]
