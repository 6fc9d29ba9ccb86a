"""The ``krakenfeed`` command.

Flags come from the contracts module's ``Option`` declarations, and each may be
given as ``KRAKENFEED_<FLAG>`` instead; a flag on the command line wins.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from krakenfeed.contracts import COMMON_OPTIONS, POSTGRES_OPTIONS, FeedId, Option, env_var

log = logging.getLogger("krakenfeed")


class OptionValueError(argparse.ArgumentTypeError):
    pass


def _parse_value(option: Option, origin: str) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        values = [v.strip() for v in text.split(",") if v.strip()] if option.is_list else [text]
        if option.is_list and not values:
            raise OptionValueError(f"needs at least one value{origin}")
        if option.choices:
            for value in values:
                if value not in option.choices:
                    shown = "***" if option.secret else repr(value)
                    raise OptionValueError(
                        f"got {shown}{origin}; allowed: {', '.join(option.choices)}"
                    )
        return values if option.is_list else text

    parse.__name__ = option.dest
    return parse


def add_options(parser: argparse.ArgumentParser, options: Iterable[Option]) -> None:
    """Declare contract options on a parser, taking defaults from their env vars."""
    for option in options:
        from_env = os.environ.get(option.env)
        default = from_env if from_env is not None else option.default
        origin = f" from {option.env}" if from_env is not None else ""
        help_text = f"{option.help} [env {option.env}]"
        if option.default is not None:
            help_text += f" (default: {option.default})"
        parser.add_argument(
            option.flag,
            dest=option.dest,
            default=default,
            required=option.required and default is None,
            type=_parse_value(option, origin),
            help=help_text,
            metavar=",".join(option.choices) if option.choices else option.dest.upper(),
        )


def _feed(args: argparse.Namespace) -> FeedId:
    try:
        return FeedId(args.namespace, args.feed)
    except ValueError as exc:
        raise SystemExit(f"krakenfeed: --namespace/--feed: {exc}") from None


def _cmd_persist(args: argparse.Namespace) -> int:
    from krakenfeed.persist import build_persist_app

    app, _ = build_persist_app(_feed(args), args.broker, args.postgres_url or "")
    app.run()
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    """Embedded Kafka and PostgreSQL, synthetic records, and the persist stage."""
    import psycopg

    from krakenfeed import synthetic
    from krakenfeed.contracts import Source, Stream
    from krakenfeed.embedded import EmbeddedKafka, EmbeddedPostgres
    from krakenfeed.kafka import contract_topic, make_application, produce_records
    from krakenfeed.persist import build_persist_app

    feed = FeedId.parse(args.feed)
    with EmbeddedKafka() as kafka, EmbeddedPostgres() as postgres:
        log.info("Tansu on %s, PostgreSQL on %s", kafka.bootstrap, postgres.url)
        app = make_application(kafka.bootstrap)
        started = time.perf_counter()
        produced = 0
        with app.get_producer() as producer:
            sources: tuple[tuple[Source, str], ...] = (
                ("futures", "PF_XBTUSD"),
                ("spot", "BTC/USD"),
            )
            for source, product in sources:
                ticker = contract_topic(app, feed, Stream.TICKER)
                trade = contract_topic(app, feed, Stream.TRADE)
                produced += produce_records(
                    producer, ticker.name, synthetic.tickers(product, args.count, source=source)
                )
                produced += produce_records(
                    producer, trade.name, synthetic.trades(product, args.count, source=source)
                )
        log.info("produced %d records to %s", produced, feed)
        persist, sink = build_persist_app(feed, kafka.bootstrap, postgres.url)
        try:
            persist.run(count=produced, timeout=30)
        finally:
            sink.close()
        elapsed = time.perf_counter() - started
        with psycopg.connect(postgres.url) as conn:
            for table in ("ticker", "trades"):
                rows = conn.execute(
                    f"SELECT product, count(*) FROM {table} GROUP BY product ORDER BY product"
                ).fetchall()
                for product, count in rows:
                    print(f"{table:<8} {product:<10} {count:>8} rows")
        print(f"{sink.rows_inserted} rows upserted from {produced} Kafka records in {elapsed:.2f}s")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="krakenfeed",
        description="Real-time anomaly detection for Kraken market data.",
        epilog=f"Every --some-flag may also be set as {env_var('--some-flag')}.",
    )
    parser.add_argument(
        "--log-level",
        default=os.environ.get(env_var("--log-level"), "INFO"),
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help=f"logging level [env {env_var('--log-level')}]",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    persist = commands.add_parser(
        "persist", help="upsert a feed's ticker and trade records from Kafka into PostgreSQL"
    )
    add_options(persist, (*COMMON_OPTIONS, *POSTGRES_OPTIONS))
    persist.set_defaults(handler=_cmd_persist)

    demo = commands.add_parser(
        "demo",
        help="run the pipeline on this machine: embedded Kafka and PostgreSQL, synthetic data",
    )
    demo.add_argument("--feed", default="local/demo", help="feed as namespace/name")
    demo.add_argument("--count", type=int, default=5000, help="records per product and stream")
    demo.set_defaults(handler=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # quixstreams imports authlib's httpx client for Quix Cloud, which krakenfeed never uses.
    warnings.filterwarnings("ignore", message="The httpx module is deprecated")
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    handler: Callable[[argparse.Namespace], int] = args.handler
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
