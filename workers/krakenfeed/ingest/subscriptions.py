"""Which subscribe requests to send, when, and which to send again.

Pure: the planner is told the time, the acks, the refusals and the rate-limit
errors, and answers with the next request. One planner lives for the whole run;
``reset`` starts every new connection from zero acks.

- **Pacing.** A token bucket: up to ``burst`` requests at once, then one per
  ``1 / requests_per_s``; each request carries up to ``batch`` products of one
  channel. A fresh connection's few requests therefore go out together (the
  replay, like Kraken, starts a stream on its first subscribe), a large
  resubscription at the pace.
- **Verification.** Every (channel, product) must be acked. A request whose answers
  do not come within ``ack_timeout_s`` fails the products still waiting.
- **Retries.** Failed products go out again after a full-jitter backoff of their
  own, in a new request; acked products are never asked for twice.
- **Rate limits.** ``Exceeded msg rate`` fails the request it answers and halves
  the pace and the burst (down to ``min_requests_per_s`` and 1) for the rest of
  the run.
- **Refusals** (an unknown product) are final: asking again gets the same answer.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from krakenfeed.ingest.resilience import jitter_ceiling_s

Key = tuple[str, str]
"""(channel, product)"""


@dataclass(frozen=True)
class PacingPolicy:
    requests_per_s: float
    burst: int = 5
    min_requests_per_s: float = 0.25
    ack_timeout_s: float = 5.0
    batch: int = 20
    retry_base_s: float = 0.5
    retry_cap_s: float = 30.0


@dataclass
class Request:
    req_id: int
    channel: str
    products: tuple[str, ...]
    sent_ns: int
    waiting: set[str] = field(default_factory=set)
    """Products with no answer yet."""
    answered: bool = False
    """Whether any answer to this request has arrived."""


class Subscriptions:
    """Ack state and resubscription plan of every (channel, product) the run wants."""

    def __init__(
        self,
        channels: Iterable[str],
        products: Iterable[str],
        policy: PacingPolicy,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.wanted: tuple[Key, ...] = tuple((c, p) for c in channels for p in products)
        self.policy = policy
        self.requests_per_s = policy.requests_per_s
        self.burst = policy.burst
        self._tokens = float(policy.burst)
        self._tokens_at_ns = 0
        self._rng = rng
        self.active: set[Key] = set()
        self.rejected: dict[Key, str] = {}
        self.rate_limited_count = 0
        self.retries = 0
        self._due_ns: dict[Key, int] = {}
        """Products to request, with the earliest time each may go."""
        self._failures: dict[Key, int] = {}
        self._in_flight: list[Request] = []
        self._next_id = 1

    # --- plan ------------------------------------------------------------------

    def reset(self, now_ns: int) -> None:
        """A new connection: nothing is acked; every product not refused is due now."""
        self.active.clear()
        self._in_flight.clear()
        self._failures.clear()
        self._due_ns = {key: now_ns for key in self.wanted if key not in self.rejected}
        self._tokens = float(self.burst)
        self._tokens_at_ns = now_ns

    def due(self, now_ns: int, *, paced: bool = True) -> list[Request]:
        """The requests to send now: one when the pace allows it, all of them unpaced."""
        out: list[Request] = []
        self._refill(now_ns)
        while True:
            if paced and self._tokens < 1:
                break
            ready = [k for k in self.wanted if self._due_ns.get(k, now_ns + 1) <= now_ns]
            if not ready:
                break
            channel = ready[0][0]
            products = tuple(p for c, p in ready if c == channel)[: self.policy.batch]
            request = Request(self._next_id, channel, products, now_ns, set(products))
            self._next_id += 1
            for product in products:
                del self._due_ns[(channel, product)]
            self._in_flight.append(request)
            self._tokens -= 1
            out.append(request)
        return out

    def _refill(self, now_ns: int) -> None:
        elapsed_s = max(0, now_ns - self._tokens_at_ns) / 1e9
        self._tokens = min(float(self.burst), self._tokens + elapsed_s * self.requests_per_s)
        self._tokens_at_ns = now_ns

    def _next_token_ns(self) -> int:
        missing = max(0.0, 1 - self._tokens)
        return self._tokens_at_ns + int(missing / self.requests_per_s * 1e9)

    def next_wake_ns(self) -> int | None:
        """When ``due`` or ``expire`` may next have work; None once settled."""
        wakes = [r.sent_ns + int(self.policy.ack_timeout_s * 1e9) for r in self._in_flight]
        if self._due_ns:
            wakes.append(max(self._next_token_ns(), min(self._due_ns.values())))
        return min(wakes) if wakes else None

    @property
    def pending(self) -> set[Key]:
        """Asked for and not answered yet."""
        return {(r.channel, p) for r in self._in_flight for p in r.waiting}

    @property
    def settled(self) -> bool:
        return not self._due_ns and not any(r.waiting for r in self._in_flight)

    def request(self, req_id: int) -> Request | None:
        return next((r for r in self._in_flight if r.req_id == req_id), None)

    def oldest_waiting(self, product: str) -> Request | None:
        """The oldest request still waiting for an answer about ``product``."""
        return next((r for r in self._in_flight if product in r.waiting), None)

    # --- answers ---------------------------------------------------------------

    def ack(self, channel: str, product: str) -> None:
        self._answer(channel, product)
        self.active.add((channel, product))
        self._failures.pop((channel, product), None)

    def reject(self, channel: str, product: str, message: str) -> None:
        """A final refusal: the product is not asked for again, on any connection."""
        self._answer(channel, product)
        self._due_ns.pop((channel, product), None)
        self.rejected[(channel, product)] = message

    def fail(self, channel: str, product: str, now_ns: int) -> None:
        """A refusal worth retrying (Kraken's ``subscribed_failed``), even of a product
        acked before."""
        self._answer(channel, product)
        self.active.discard((channel, product))
        if (channel, product) not in self.rejected:
            self._retry([(channel, product)], now_ns)

    def rate_limited(self, now_ns: int) -> list[Key]:
        """``Exceeded msg rate``: Kraken answers requests in order, so the refused one
        is the oldest that has had no answer at all. Returns the products to retry."""
        self.rate_limited_count += 1
        self.requests_per_s = max(self.policy.min_requests_per_s, self.requests_per_s / 2)
        self.burst = max(1, self.burst // 2)
        self._tokens = min(self._tokens, 0.0)
        refused = next((r for r in self._in_flight if not r.answered and r.waiting), None)
        if refused is None:
            return []
        failed = [(refused.channel, p) for p in sorted(refused.waiting)]
        refused.waiting.clear()
        refused.answered = True
        self._retry(failed, now_ns)
        return failed

    def expire(self, now_ns: int) -> list[Key]:
        """Fail what waited longer than ``ack_timeout_s``; returns the products to retry."""
        limit = int(self.policy.ack_timeout_s * 1e9)
        failed = []
        for request in self._in_flight:
            if request.waiting and now_ns - request.sent_ns >= limit:
                failed += [(request.channel, p) for p in sorted(request.waiting)]
                request.waiting.clear()
        self._retry(failed, now_ns)
        return failed

    def _answer(self, channel: str, product: str) -> None:
        for request in self._in_flight:
            if request.channel == channel and product in request.waiting:
                request.waiting.discard(product)
                request.answered = True
                break
        self._in_flight = [r for r in self._in_flight if r.waiting]

    def _retry(self, keys: list[Key], now_ns: int) -> None:
        for key in keys:
            failures = self._failures[key] = self._failures.get(key, 0) + 1
            ceiling = jitter_ceiling_s(failures, self.policy.retry_base_s, self.policy.retry_cap_s)
            self._due_ns[key] = now_ns + int(self._rng() * ceiling * 1e9)
            self.retries += 1
        self._in_flight = [r for r in self._in_flight if r.waiting]
