"""The JSON records krakenfeed writes to Kafka.

Every record carries ``source``, ``product``, ``exchange_time_ms`` (``None`` when
the exchange gives no time, as on the spot ticker) and ``received_time_ns``.
Kafka key = the product id as the exchange spells it; Kafka timestamp = exchange
time when known, else receive time.
"""

from __future__ import annotations

import hashlib
from enum import StrEnum
from typing import Literal, TypeVar

import msgspec

Source = Literal["futures", "spot"]
Side = Literal["buy", "sell"]


class _Record(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    source: Source
    product: str
    exchange_time_ms: int | None
    received_time_ns: int


class Ticker(_Record, frozen=True, kw_only=True):
    """Top of book and day statistics; futures-only fields are ``None`` on spot."""

    bid: float
    ask: float
    bid_size: float
    ask_size: float
    last: float | None
    volume: float | None
    mark_price: float | None = None
    index_price: float | None = None
    premium: float | None = None
    funding_rate: float | None = None
    relative_funding_rate: float | None = None
    open_interest: float | None = None


class Trade(_Record, frozen=True, kw_only=True):
    """One execution: spot trades carry ``trade_id``, futures trades ``seq`` and ``uid``."""

    side: Side
    price: float
    qty: float
    trade_id: int | None = None
    seq: int | None = None
    uid: str | None = None


class DeadLetterReason(StrEnum):
    """Machine-readable reasons a payload was refused."""

    MALFORMED_JSON = "malformed_json"
    UNKNOWN_FRAME = "unknown_frame"
    SCHEMA_MISMATCH = "schema_mismatch"
    NON_POSITIVE = "non_positive"
    CROSSED_QUOTE = "crossed_quote"
    CLOCK_SKEW = "clock_skew"
    UNKNOWN_PRODUCT = "unknown_product"


class DeadLetter(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """A payload that failed validation, kept whole so that nothing is lost."""

    source: Source | None
    """The Kraken API it came from; None when a Kafka record was too broken to tell."""
    received_time_ns: int
    reason: DeadLetterReason
    detail: str
    raw: str
    """The payload exactly as received, decoded as UTF-8 with replacement."""
    product: str | None = None
    exchange_time_ms: int | None = None
    stage: Literal["ingest", "detector"] = "ingest"
    """Who refused it: ingest refuses Kraken frames, the detector refuses Kafka records."""
    topic: str | None = None
    """For the detector: the Kafka topic the refused record was read from."""


class QualityKind(StrEnum):
    SEQUENCE_GAP = "sequence_gap"
    RECONNECT = "reconnect"
    STALE_PRODUCT = "stale_product"
    SUBSCRIPTION_REJECTED = "subscription_rejected"
    PROTOCOL_ERROR = "protocol_error"
    """An error frame from Kraken that answers no subscription, such as a rate limit."""
    EXCHANGE_STATUS = "exchange_status"
    """Kraken reported a system state other than ``online``."""
    DEAD_LETTER = "dead_letter"


class QualityEvent(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """A data-quality observation about the feed rather than about the market."""

    source: Source
    kind: QualityKind
    received_time_ns: int
    detail: str
    product: str | None = None
    exchange_time_ms: int | None = None
    attributes: dict[str, str | int | float | bool | None] = {}


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class Anomaly(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """A detector's finding. Deterministic given the input, except ``detected_time_ns``
    and ``trace_id``."""

    feed: str
    product: str
    detector: str
    event_time_ms: int
    """The market time of the value that triggered it (Kafka timestamp of the input)."""
    detected_time_ns: int
    value: float
    baseline_low: float
    baseline_high: float
    """The range the detector expected ``value`` to fall in."""
    score: float
    severity: Severity
    context: dict[str, float | int | str | None] = {}
    """The features at that moment."""
    trace_id: str | None = None

    @property
    def exchange_time_ms(self) -> int:
        return self.event_time_ms


AnyRecord = Ticker | Trade | DeadLetter | QualityEvent | Anomaly
R = TypeVar("R", Ticker, Trade, DeadLetter, QualityEvent, Anomaly)

_encoder = msgspec.json.Encoder()


def encode_record(record: AnyRecord) -> bytes:
    """The Kafka value of a record: compact JSON."""
    return _encoder.encode(record)


_decoders: dict[type, msgspec.json.Decoder[AnyRecord]] = {}


def decode_record(data: bytes | str, kind: type[R]) -> R:
    """Decode and validate a Kafka value; raises ``msgspec.ValidationError`` on drift."""
    decoder = _decoders.get(kind)
    if decoder is None:
        decoder = _decoders[kind] = msgspec.json.Decoder(kind)
    record: R = decoder.decode(data)  # type: ignore[assignment]
    return record


def record_key(record: AnyRecord) -> bytes | None:
    """The Kafka key: the product id as the exchange spells it, when there is one."""
    return record.product.encode() if record.product is not None else None


def record_timestamp_ms(record: AnyRecord) -> int:
    """The Kafka timestamp: exchange time when known, else receive time."""
    if record.exchange_time_ms is not None:
        return record.exchange_time_ms
    return record.received_time_ns // 1_000_000


def quality_event_id(event: QualityEvent | DeadLetter) -> str:
    """A deterministic id: the same observation always hashes to the same id.

    Dead letters are quality events too (kind ``dead_letter``) and hash the same way.
    An observation stamped with exchange time (a sequence gap is, by the trade that
    revealed it) is the same observation whenever it was received: its receive time
    is left out, so replaying a session records its gaps once.
    """
    fields = msgspec.to_builtins(event)
    if event.exchange_time_ms is not None:
        del fields["received_time_ns"]
    canonical = msgspec.json.encode([type(event).__name__, fields], order="sorted")
    return hashlib.blake2b(canonical, digest_size=16).hexdigest()
