"""Staying connected, decided purely: reconnect backoff, which disconnects are
terminal, and the watchdog's deadlines.

Nothing here reads a clock or a socket: callers pass the time in (nanoseconds from
any monotonic-enough clock) and an RNG, so every decision is testable to the digit.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

TERMINAL_CLOSE_CODES: Final = frozenset({1008})
"""Policy violation: Kraken refuses this client; reconnecting would repeat the offence."""
TERMINAL_UPGRADE_STATUSES: Final = frozenset({400, 401, 403, 404})
"""The request itself is wrong or forbidden: no retry can fix it."""
ABNORMAL_CLOSURE: Final = 1006
"""RFC 6455's code for a connection lost without a close frame (never sent on the wire)."""

_CLOSE_NAMES: Final = {
    1000: "normal closure",
    1001: "going away",
    1006: "abnormal closure",
    1008: "policy violation",
    1011: "internal error",
    1012: "service restart",
    1013: "try again later",
}


@dataclass(frozen=True)
class Disconnect:
    """Why a connection ended or could not start, and whether to try again."""

    cause: str
    """One line for logs and the ``reconnect`` quality event."""
    terminal: bool
    code: int | None = None
    """The close code, or the HTTP status of a refused upgrade."""
    kind: str = "dropped"
    """A short, bounded name of the cause, for metric labels: ``close_1011``,
    ``upgrade_429``, ``dropped``, ``unreachable``, ``silent``."""


def classify_close(code: int | None, reason: str = "") -> Disconnect:
    """A close frame from the server: 1008 is terminal, every other code retryable."""
    if code is None:
        return Disconnect("closed without a status code", False, None, "close_none")
    name = _CLOSE_NAMES.get(code, "unknown code")
    cause = f"closed with {code} ({name})" + (f": {reason}" if reason else "")
    return Disconnect(cause, code in TERMINAL_CLOSE_CODES, code, f"close_{code}")


def classify_upgrade(status: int, detail: str = "") -> Disconnect:
    """An HTTP answer other than 101 to the upgrade: 400/401/403/404 are terminal;
    429, 503 and everything else retryable."""
    cause = f"upgrade refused with HTTP {status}" + (f": {detail}" if detail else "")
    return Disconnect(cause, status in TERMINAL_UPGRADE_STATUSES, status, f"upgrade_{status}")


def dropped(detail: str) -> Disconnect:
    """The socket ended without a close frame (RFC 6455 calls that 1006)."""
    return Disconnect(
        f"dropped without a close frame: {detail}", False, ABNORMAL_CLOSURE, "dropped"
    )


def unreachable(detail: str) -> Disconnect:
    """No connection at all: refused, reset, DNS, timeout."""
    return Disconnect(f"cannot connect: {detail}", False, kind="unreachable")


def silent(seconds: float) -> Disconnect:
    return Disconnect(
        f"silent for {seconds:.3f} s: no frame, not even a heartbeat", False, kind="silent"
    )


@dataclass(frozen=True)
class BackoffPolicy:
    base_s: float = 1.0
    """The ceiling of the second attempt's delay; it doubles per attempt after that."""
    cap_s: float = 60.0
    """The largest ceiling: a long outage is retried at least this often."""
    healthy_s: float = 30.0
    """A connection that lasted this long resets the attempt counter."""

    def __post_init__(self) -> None:
        if self.base_s < 0 or self.cap_s < self.base_s or self.healthy_s < 0:
            raise ValueError(f"need 0 <= base_s <= cap_s and healthy_s >= 0, got {self}")


def jitter_ceiling_s(attempt: int, base_s: float, cap_s: float) -> float:
    """The ceiling of full jitter: 0 for attempt 0, then base, 2·base, 4·base… up to cap."""
    if attempt <= 0:
        return 0.0
    return min(cap_s, base_s * 2.0 ** min(attempt - 1, 64))


class Backoff:
    """Exponential backoff with full jitter and no limit on attempts.

    The first attempt after a healthy connection goes at once, since a routine drop
    (a proxy restart) should cost nothing. Attempt n >= 1 then waits a uniform draw
    from [0, min(cap, base * 2**(n-1))]. Only a connection that stays up for
    ``healthy_s`` resets the counter, so a server that accepts and drops at once
    meets a growing delay rather than a hot loop.
    """

    def __init__(self, policy: BackoffPolicy, rng: Callable[[], float] = random.random) -> None:
        self.policy = policy
        self._rng = rng
        self.attempt = 0
        """Attempts since the last healthy connection."""
        self._up_since_ns: int | None = None

    def next_delay_s(self) -> float:
        """The wait before the next attempt; counts the attempt."""
        delay = self._rng() * jitter_ceiling_s(self.attempt, self.policy.base_s, self.policy.cap_s)
        self.attempt += 1
        return delay

    def connected(self, now_ns: int) -> None:
        self._up_since_ns = now_ns

    def disconnected(self, now_ns: int) -> None:
        up = self._up_since_ns
        if up is not None and now_ns - up >= self.policy.healthy_s * 1e9:
            self.attempt = 0
        self._up_since_ns = None


@dataclass(frozen=True)
class Stale:
    product: str
    silent_s: float
    threshold_s: float


@dataclass
class Watchdog:
    """Two clocks over one connection.

    The connection clock counts from the last frame of any kind — heartbeats
    included — so it fires only on a socket that has gone silent, never because a
    product is quiet. The product clocks count from each product's last valid data
    (or from when it was first watched) and produce one ``stale`` report per
    silent spell; data re-arms them.
    """

    silence_s: float
    stale_s: float
    """Default threshold of a product's silence."""
    stale_overrides: Mapping[str, float] = field(default_factory=dict)
    """Per-product thresholds: a thin pair can be quiet for longer than a busy one."""
    _since_ns: dict[str, int] = field(default_factory=dict)
    _reported_ns: dict[str, int] = field(default_factory=dict)

    def threshold_s(self, product: str) -> float:
        return self.stale_overrides.get(product, self.stale_s)

    def silent_for_s(self, last_frame_ns: int, now_ns: int) -> float | None:
        """The silence, when it exceeds ``silence_s``; None while the socket is alive."""
        quiet = (now_ns - last_frame_ns) / 1e9
        return quiet if quiet > self.silence_s else None

    def watch(self, products: Iterable[str], now_ns: int) -> None:
        """Start the clocks of products not yet watched (on their first ack)."""
        for product in products:
            self._since_ns.setdefault(product, now_ns)

    def rearm(self, now_ns: int) -> None:
        """A new connection: silence before it was the outage, already reported as such."""
        for product in self._since_ns:
            self._since_ns[product] = now_ns

    def stale(self, last_data_ns: Mapping[str, int], now_ns: int) -> list[Stale]:
        """Products newly silent beyond their threshold; each spell is reported once."""
        out = []
        for product, since in self._since_ns.items():
            last = max(since, last_data_ns.get(product, since))
            reported = self._reported_ns.get(product)
            if reported is not None and reported >= last:
                continue
            quiet = (now_ns - last) / 1e9
            threshold = self.threshold_s(product)
            if quiet > threshold:
                self._reported_ns[product] = last
                out.append(Stale(product, quiet, threshold))
        return out

    def next_deadline_ns(self, last_frame_ns: int, last_data_ns: Mapping[str, int]) -> int:
        """The earliest moment a check could find something: when to look next."""
        deadline = last_frame_ns + int(self.silence_s * 1e9)
        for product, since in self._since_ns.items():
            last = max(since, last_data_ns.get(product, since))
            if self._reported_ns.get(product, -1) >= last:
                continue
            deadline = min(deadline, last + int(self.threshold_s(product) * 1e9))
        return deadline
