-- The krakenfeed schema. Every primary key is the natural key of
-- krakenfeed.contracts.tables, so every write is an INSERT … ON CONFLICT DO NOTHING.
--
-- ticker and trades are partitioned by UTC day on event_time_ms, the Kafka
-- timestamp of the record (exchange time in ms, else receive time in ms).
-- krakenfeed.store.partitions creates and drops the day partitions; there is
-- deliberately no default partition, so a row for a day nobody prepared fails
-- loudly instead of landing where retention never looks.
--
-- PostgreSQL requires the partition key in every unique constraint, so the keys
-- end with event_time_ms. The CHECK binds event_time_ms to the record's own times,
-- which makes it a function of time_key (ticker) and keeps the key exactly as
-- unique as the contract's. A generated column cannot be a partition key, hence a
-- CHECK rather than a generated event_time_ms.

CREATE TABLE ticker (
    feed                  text             NOT NULL,
    product               text             NOT NULL,
    source                text             NOT NULL,
    event_time_ms         bigint           NOT NULL,
    exchange_time_ms      bigint,
    received_time_ns      bigint           NOT NULL,
    -- Exchange time in ms, or receive time in ns: the magnitudes cannot collide.
    time_key              bigint GENERATED ALWAYS AS
                              (COALESCE(exchange_time_ms, received_time_ns)) STORED,
    bid                   double precision NOT NULL,
    ask                   double precision NOT NULL,
    bid_size              double precision NOT NULL,
    ask_size              double precision NOT NULL,
    last                  double precision,
    volume                double precision,
    mark_price            double precision,
    index_price           double precision,
    premium               double precision,
    funding_rate          double precision,
    relative_funding_rate double precision,
    open_interest         double precision,
    CONSTRAINT ticker_event_time_ms_is_the_kafka_timestamp
        CHECK (event_time_ms = COALESCE(exchange_time_ms, received_time_ns / 1000000)),
    PRIMARY KEY (feed, product, time_key, event_time_ms)
) PARTITION BY RANGE (event_time_ms);

CREATE TABLE trades (
    feed             text             NOT NULL,
    product          text             NOT NULL,
    source           text             NOT NULL,
    event_time_ms    bigint           NOT NULL,
    exchange_time_ms bigint,
    received_time_ns bigint           NOT NULL,
    side             text             NOT NULL CHECK (side IN ('buy', 'sell')),
    price            double precision NOT NULL,
    qty              double precision NOT NULL,
    trade_id         bigint,
    seq              bigint,
    uid              text,
    -- The spot trade_id or the futures seq.
    trade_key        bigint GENERATED ALWAYS AS (COALESCE(trade_id, seq)) STORED,
    CONSTRAINT trades_event_time_ms_is_the_kafka_timestamp
        CHECK (event_time_ms = COALESCE(exchange_time_ms, received_time_ns / 1000000)),
    PRIMARY KEY (feed, product, trade_key, event_time_ms)
) PARTITION BY RANGE (event_time_ms);

CREATE TABLE anomalies (
    feed             text             NOT NULL,
    product          text             NOT NULL,
    detector         text             NOT NULL,
    event_time_ms    bigint           NOT NULL,
    detected_time_ns bigint           NOT NULL,
    value            double precision NOT NULL,
    baseline_low     double precision NOT NULL,
    baseline_high    double precision NOT NULL,
    score            double precision NOT NULL,
    severity         text             NOT NULL CHECK (severity IN ('info', 'warning', 'critical')),
    context          jsonb            NOT NULL DEFAULT '{}',
    trace_id         text,
    PRIMARY KEY (feed, product, detector, event_time_ms)
);

-- "What happened on this feed lately", across products and detectors.
CREATE INDEX anomalies_by_feed_and_time ON anomalies (feed, event_time_ms);

CREATE TABLE quality_events (
    feed             text   NOT NULL,
    event_id         text   NOT NULL,
    source           text   NOT NULL,
    kind             text   NOT NULL,
    product          text,
    exchange_time_ms bigint,
    received_time_ns bigint NOT NULL,
    detail           text   NOT NULL,
    -- Dead letters only: the reason code and the payload exactly as received.
    reason           text,
    raw              text,
    attributes       jsonb  NOT NULL DEFAULT '{}',
    PRIMARY KEY (feed, event_id)
);

CREATE INDEX quality_events_by_feed_and_time ON quality_events (feed, received_time_ns);
