"""Features and detectors for one feed, over per-product state the caller keeps.

The detector worker keeps one ``ProductState`` per product (the Kafka key) in
its state store: ``decode_state`` → ``DetectorEngine.process`` → ``encode_state``
per record gives exactly the anomalies of keeping the object in memory, because
the state is all the engine remembers. The engine reads time only from its
arguments: the record's event time drives every detector, and ``now_ns`` (the
caller's clock) only stamps ``detected_time_ns`` and feeds the wall-clock
silence check.
"""

from __future__ import annotations

from typing import Final

import msgspec

from krakenfeed.contracts import Anomaly, FeedId, Ticker, Trade
from krakenfeed.detect.config import DetectorConfig
from krakenfeed.detect.detectors import (
    Context,
    Finding,
    Likelihood,
    LikelihoodState,
    PremiumDislocation,
    PremiumState,
    PriceJump,
    PriceJumpState,
    SpreadBlowout,
    SpreadState,
    Stale,
    StaleState,
    TradeBurst,
    TradeBurstState,
)
from krakenfeed.detect.features import BPS, QuoteFeatures, update_quote

_NS_PER_MS: Final = 1_000_000


class ProductState(msgspec.Struct, kw_only=True, array_like=True, gc=False):
    """Everything the engine remembers about one product (about 1.6 KB encoded).

    Encoded as msgpack arrays: to stay readable by older states, new fields go at
    the end of a struct and carry defaults. The state structs are ``gc=False``:
    they hold only numbers, lists of numbers and bytes, so they cannot be part of
    a reference cycle, and decoding skips the cycle collector's bookkeeping.
    """

    product: str
    quote: QuoteFeatures
    price_jump: PriceJumpState
    spread: SpreadState
    premium: PremiumState
    trades: TradeBurstState
    stale: StaleState
    likelihood: LikelihoodState


_encoder: Final = msgspec.msgpack.Encoder()
_decoder: Final = msgspec.msgpack.Decoder(ProductState)


def encode_state(state: ProductState) -> bytes:
    return _encoder.encode(state)


def decode_state(data: bytes) -> ProductState:
    return _decoder.decode(data)


class DetectorEngine:
    """Runs one feed's features and detectors; holds configuration only."""

    def __init__(self, feed: FeedId | str, config: DetectorConfig | None = None) -> None:
        self.feed = str(feed)
        self.config = config = config or DetectorConfig()
        self.price_jump = PriceJump(config.price_jump)
        self.spread_blowout = SpreadBlowout(config.spread_blowout)
        self.premium_dislocation = PremiumDislocation(config.premium_dislocation)
        self.trade_burst = TradeBurst(config.trade_burst)
        self.stale = Stale(config.stale)
        self.likelihood = Likelihood(config.likelihood, config.scorer)

    def new_state(self, product: str) -> ProductState:
        return ProductState(
            product=product,
            quote=QuoteFeatures(),
            price_jump=self.price_jump.new_state(),
            spread=self.spread_blowout.new_state(),
            premium=self.premium_dislocation.new_state(),
            trades=self.trade_burst.new_state(),
            stale=self.stale.new_state(),
            likelihood=self.likelihood.new_state(),
        )

    def process(
        self, state: ProductState, record: Ticker | Trade, event_time_ms: int, now_ns: int
    ) -> list[Anomaly]:
        """Update ``state`` with one record of its product; the anomalies it reveals.

        ``event_time_ms`` is the record's Kafka timestamp (``record_timestamp_ms``).
        """
        config = self.config
        anomalies: list[Anomaly] = []
        if config.stale.enabled:
            finding = self.stale.observe_record(state.stale, event_time_ms, now_ns // _NS_PER_MS)
            if finding is not None:
                anomalies.append(self._anomaly(state, Stale.name, event_time_ms, now_ns, finding))
        if isinstance(record, Ticker):
            self._process_ticker(state, record, event_time_ms, now_ns, anomalies)
        else:
            self._process_trade(state, record, event_time_ms, now_ns, anomalies)
        return anomalies

    def check_stale(self, state: ProductState, now_ns: int) -> list[Anomaly]:
        """The wall-clock half of staleness: has this product gone quiet?

        Call it periodically for every known product; a silence is reported once.
        Its ``event_time_ms`` is the product's last event time, so a repeated
        check (say after a restart) produces the same record key.
        """
        if not self.config.stale.enabled:
            return []
        finding = self.stale.check_silence(state.stale, now_ns // _NS_PER_MS)
        if finding is None:
            return []
        return [self._anomaly(state, Stale.name, state.stale.last_event_ms, now_ns, finding)]

    def _process_ticker(
        self,
        state: ProductState,
        ticker: Ticker,
        time_ms: int,
        now_ns: int,
        anomalies: list[Anomaly],
    ) -> None:
        config = self.config
        quote = state.quote
        mid_changed = update_quote(quote, ticker, time_ms)
        if mid_changed and config.price_jump.enabled:
            finding = self.price_jump.observe(state.price_jump, quote, time_ms)
            if finding is not None:
                anomalies.append(self._anomaly(state, PriceJump.name, time_ms, now_ns, finding))
        if config.spread_blowout.enabled:
            finding = self.spread_blowout.observe(state.spread, quote.spread_bps, time_ms)
            if finding is not None:
                anomalies.append(self._anomaly(state, SpreadBlowout.name, time_ms, now_ns, finding))
        basis = quote.basis_bps
        if (
            basis is not None
            and config.premium_dislocation.enabled
            and (ticker.mark_price is not None or ticker.premium is not None)
        ):
            finding = self.premium_dislocation.observe(state.premium, basis, time_ms)
            if finding is not None:
                anomalies.append(
                    self._anomaly(state, PremiumDislocation.name, time_ms, now_ns, finding)
                )
        if config.stale.enabled:
            finding = self.stale.observe_quote(state.stale, ticker, time_ms)
            if finding is not None:
                anomalies.append(self._anomaly(state, Stale.flat_name, time_ms, now_ns, finding))

    def _process_trade(
        self,
        state: ProductState,
        trade: Trade,
        time_ms: int,
        now_ns: int,
        anomalies: list[Anomaly],
    ) -> None:
        config = self.config
        if config.trade_burst.enabled:
            finding = self.trade_burst.observe(state.trades, trade.price * trade.qty, time_ms)
            if finding is not None:
                anomalies.append(self._anomaly(state, TradeBurst.name, time_ms, now_ns, finding))
        if config.likelihood.enabled:
            scored = self.likelihood.observe_trade(state.likelihood, time_ms)
            if scored is not None:
                end_ms, finding = scored
                anomalies.append(self._anomaly(state, Likelihood.name, end_ms, now_ns, finding))

    def _anomaly(
        self, state: ProductState, detector: str, time_ms: int, now_ns: int, finding: Finding
    ) -> Anomaly:
        return Anomaly(
            feed=self.feed,
            product=state.product,
            detector=detector,
            event_time_ms=time_ms,
            detected_time_ns=now_ns,
            value=finding.value,
            baseline_low=finding.low,
            baseline_high=finding.high,
            score=finding.score,
            severity=finding.severity,
            context=self._context(state, finding.extra),
        )

    def _context(self, state: ProductState, extra: Context | None) -> Context:
        """The features at the moment of the finding, plus what the detector adds.

        Trade features are as of the product's latest trade.
        """
        quote, trades = state.quote, state.trades
        window_s = len(trades.window.counts)
        context: Context = {
            "mid": quote.mid,
            "spread_bps": quote.spread_bps,
            "imbalance": quote.imbalance,
            "log_return_bps": quote.log_return * BPS,
            "basis_bps": quote.basis_bps,
            "funding_rate": quote.funding_rate,
            "relative_funding_rate": quote.relative_funding_rate,
            f"trade_count_{window_s}s": trades.window.count,
            f"trade_notional_{window_s}s": trades.window.notional,
            "trade_rate_per_s": trades.count_rate.level,
            "trade_notional_per_s": trades.notional_rate.level,
        }
        if extra:
            context.update(extra)
        return context
