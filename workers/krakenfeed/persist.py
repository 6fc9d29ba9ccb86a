"""Kafka → PostgreSQL for one feed's market data.

The last stage of the pipeline as a quixstreams Application: the feed's ticker
and trade topics flow into ``PostgresSink``; quixstreams commits offsets only
after the sink has flushed the rows they cover.
"""

from __future__ import annotations

from krakenfeed.contracts import FeedId, Stream, consumer_group
from krakenfeed.kafka import Application, contract_topic, make_application
from krakenfeed.store import PostgresSink

MARKET_STREAMS = (Stream.TICKER, Stream.TRADE)


def build_persist_app(
    feed: FeedId,
    broker: str,
    conninfo: str = "",
    *,
    group: str | None = None,
    commit_interval: float = 1.0,
    auto_offset_reset: str = "earliest",
    sink: PostgresSink | None = None,
) -> tuple[Application, PostgresSink]:
    app = make_application(
        broker,
        consumer_group=group or consumer_group(feed),
        auto_offset_reset=auto_offset_reset,
        commit_interval=commit_interval,
        use_changelog_topics=False,
        consumer_extra_config={"session.timeout.ms": 6000},
    )
    sink = sink or PostgresSink(feed, conninfo)
    for stream in MARKET_STREAMS:
        app.dataframe(contract_topic(app, feed, stream)).sink(sink)
    return app, sink
