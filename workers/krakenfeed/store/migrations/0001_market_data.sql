-- Market data as the ingest worker normalised it. The primary keys are the
-- natural keys of krakenfeed.contracts.tables, so every write is an upsert.
CREATE TABLE ticker (
    feed                  text             NOT NULL,
    product               text             NOT NULL,
    source                text             NOT NULL,
    exchange_time_ms      bigint,
    received_time_ns      bigint           NOT NULL,
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
    PRIMARY KEY (feed, product, time_key)
);

CREATE TABLE trades (
    feed             text             NOT NULL,
    product          text             NOT NULL,
    source           text             NOT NULL,
    exchange_time_ms bigint,
    received_time_ns bigint           NOT NULL,
    side             text             NOT NULL CHECK (side IN ('buy', 'sell')),
    price            double precision NOT NULL,
    qty              double precision NOT NULL,
    trade_id         bigint,
    seq              bigint,
    uid              text,
    trade_key        bigint GENERATED ALWAYS AS (COALESCE(trade_id, seq)) STORED,
    PRIMARY KEY (feed, product, trade_key)
);
