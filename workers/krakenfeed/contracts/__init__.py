"""The single owner of every name shared between the operator and the workers.

Topic names, consumer groups, record schemas, CLI flags and their environment
variables, PostgreSQL table keys and the ``KrakenFeed`` spec model are defined
here and nowhere else. This package is pure: it imports msgspec and the
standard library only.
"""

from krakenfeed.contracts.naming import (
    LOCAL_NAMESPACE,
    TOPIC_CONFIG,
    FeedId,
    Stream,
    consumer_group,
    topic,
)
from krakenfeed.contracts.options import (
    COMMON_OPTIONS,
    INGEST_OPTIONS,
    POSTGRES_ENV_VARS,
    POSTGRES_OPTIONS,
    Option,
    env_var,
)
from krakenfeed.contracts.records import (
    DeadLetter,
    DeadLetterReason,
    QualityEvent,
    QualityKind,
    Source,
    Ticker,
    Trade,
    decode_record,
    encode_record,
    quality_event_id,
    record_key,
    record_timestamp_ms,
)
from krakenfeed.contracts.spec import (
    API_VERSION,
    CRD_GROUP,
    CRD_KIND,
    CRD_PLURAL,
    CRD_SHORT_NAMES,
    CRD_SINGULAR,
    CRD_VERSION,
    KrakenFeedSpec,
    SourceSpec,
    SpecError,
    parse_spec,
)
from krakenfeed.contracts.tables import (
    ANOMALIES,
    QUALITY_EVENTS,
    TABLES,
    TICKER,
    TRADES,
    TableKey,
    ticker_time_key,
    trade_key,
)

__all__ = [
    "ANOMALIES",
    "API_VERSION",
    "COMMON_OPTIONS",
    "CRD_GROUP",
    "CRD_KIND",
    "CRD_PLURAL",
    "CRD_SHORT_NAMES",
    "CRD_SINGULAR",
    "CRD_VERSION",
    "INGEST_OPTIONS",
    "LOCAL_NAMESPACE",
    "POSTGRES_ENV_VARS",
    "POSTGRES_OPTIONS",
    "QUALITY_EVENTS",
    "TABLES",
    "TICKER",
    "TOPIC_CONFIG",
    "TRADES",
    "DeadLetter",
    "DeadLetterReason",
    "FeedId",
    "KrakenFeedSpec",
    "Option",
    "QualityEvent",
    "QualityKind",
    "Source",
    "SourceSpec",
    "SpecError",
    "Stream",
    "TableKey",
    "Ticker",
    "Trade",
    "consumer_group",
    "decode_record",
    "encode_record",
    "env_var",
    "parse_spec",
    "quality_event_id",
    "record_key",
    "record_timestamp_ms",
    "ticker_time_key",
    "topic",
    "trade_key",
]
