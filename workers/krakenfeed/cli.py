"""The ``krakenfeed`` command.

Flags come from the contracts module's ``Option`` declarations, and each may be
given as ``KRAKENFEED_<FLAG>`` instead; a flag on the command line wins.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from contextlib import ExitStack
from typing import Any

from krakenfeed.contracts import (
    COMMON_OPTIONS,
    DETECT_OPTIONS,
    HTTP_OPTIONS,
    INGEST_OPTIONS,
    POSTGRES_OPTIONS,
    TOPIC_OPTIONS,
    FeedId,
    Option,
    Stream,
    env_var,
    product_id_problem,
)
from krakenfeed.telemetry import Tracing, configure_logging, configure_tracing

log = logging.getLogger("krakenfeed")


class OptionValueError(argparse.ArgumentTypeError):
    pass


_NUMBER_TYPES: dict[str, Callable[[str], Any]] = {"int": int, "float": float}
_NUMBER_WORDS = {"int": "a whole number", "float": "a number"}


def _parse_value(option: Option, origin: str) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        values = [v.strip() for v in text.split(",") if v.strip()] if option.is_list else [text]
        shown = "***" if option.secret else repr(text)
        if option.is_list and not values:
            raise OptionValueError(f"got {shown}{origin}; needs at least one value")
        if option.choices:
            for value in values:
                if value not in option.choices:
                    raise OptionValueError(
                        f"got {value!r}{origin}; allowed: {', '.join(option.choices)}"
                    )
        if option.value_type != "str":
            expected = _NUMBER_WORDS[option.value_type]
            if option.minimum is not None:
                expected += f" >= {option.minimum:g}"
            try:
                number = _NUMBER_TYPES[option.value_type](text)
            except ValueError:
                raise OptionValueError(f"got {shown}{origin}; expected {expected}") from None
            if option.minimum is not None and number < option.minimum:
                raise OptionValueError(f"got {shown}{origin}; expected {expected}")
            return number
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
        feed = FeedId(args.namespace, args.feed)
    except ValueError as exc:
        raise SystemExit(f"krakenfeed: --namespace/--feed: {exc}") from None
    overrides = {
        stream: name for stream in Stream if (name := getattr(args, f"{stream.value}_topic", None))
    }
    try:
        return feed.with_topics(overrides)
    except ValueError as exc:
        raise SystemExit(f"krakenfeed: --<stream>-topic: {exc}") from None


def _cmd_ingest(args: argparse.Namespace) -> int:
    import signal
    from pathlib import Path

    from krakenfeed.ingest.resilience import BackoffPolicy
    from krakenfeed.ingest.worker import IngestSettings, IngestWorker, parse_thresholds

    for product in args.products:
        problem = product_id_problem(args.api, product)
        if problem:
            raise SystemExit(f"krakenfeed ingest: argument --products: {problem}")
    try:
        stale_after_product = parse_thresholds(args.stale_after_product or [])
        backoff = BackoffPolicy(args.backoff_base_s, args.backoff_cap_s, args.healthy_after_s)
    except ValueError as exc:
        raise SystemExit(f"krakenfeed ingest: {exc}") from None
    tracing = _tracing("ingest")
    worker = IngestWorker(
        IngestSettings(
            feed=_feed(args),
            api=args.api,
            products=tuple(args.products),
            channels=tuple(args.channels),
            broker=args.broker,
            url=args.url,
            max_clock_skew_ms=args.max_clock_skew_ms,
            capture=Path(args.capture) if args.capture else None,
            ping_interval_s=args.ping_interval_s,
            watchdog_s=args.watchdog_s,
            stale_after_s=args.stale_after_s,
            stale_after_product=stale_after_product,
            backoff=backoff,
        ),
        tracing=tracing,
    )
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: worker.stop())
    try:
        if not args.http_port:
            return worker.run()
        from krakenfeed.monitoring.ingest import serving_ingest
        from krakenfeed.monitoring.server import EndpointError

        try:
            with serving_ingest(worker, args.http_port):
                return worker.run()
        except EndpointError as exc:
            raise SystemExit(f"krakenfeed ingest: {exc}") from None
    finally:
        if tracing:
            tracing.shutdown()


def _cmd_detect(args: argparse.Namespace) -> int:
    import socket
    from pathlib import Path

    import msgspec

    from krakenfeed.detect import DetectorConfig
    from krakenfeed.pipeline import build_detector_app, consumed_topics

    try:
        config = msgspec.json.decode(args.detector_config or "{}", type=DetectorConfig)
    except msgspec.DecodeError as exc:
        raise SystemExit(f"krakenfeed detect: argument --detector-config: {exc}") from None
    feed = _feed(args)
    stats = None
    if args.http_port:
        from krakenfeed.monitoring.detector import ConsumerStats

        stats = ConsumerStats(sources=consumed_topics(feed))
    tracing = _tracing("detect")
    app, sink = build_detector_app(
        feed,
        args.broker,
        args.postgres_url or "",
        config=config,
        retention_days=args.retention_days,
        state_dir=Path(args.state_dir),
        commit_interval=args.commit_interval_s,
        processing_guarantee=args.processing_guarantee,
        # The host name is the pod name on Kubernetes: kept across container
        # restarts, different for every replica.
        instance_id=args.instance_id or socket.gethostname(),
        consumer_stats=stats.update if stats else None,
        tracing=tracing,
    )
    with ExitStack() as stack:
        if tracing:
            # Runs after the sink's close: its last batch's span is exported too.
            stack.callback(tracing.shutdown)
        stack.callback(sink.close)
        if stats:
            from krakenfeed.monitoring.detector import serving_detector
            from krakenfeed.monitoring.server import EndpointError

            endpoint = serving_detector(
                feed, args.broker, args.postgres_url or "", sink, stats, args.http_port
            )
            try:
                stack.enter_context(endpoint)
            except EndpointError as exc:
                raise SystemExit(f"krakenfeed detect: {exc}") from None
        app.run()
    return 0


def _tracing(command: str) -> Tracing | None:
    """The command's tracing from the ``OTEL_*`` variables; a bad one exits 2."""
    try:
        return configure_tracing(f"krakenfeed-{'detector' if command == 'detect' else command}")
    except ValueError as exc:
        raise SystemExit(f"krakenfeed {command}: {exc}") from None


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

    ingest = commands.add_parser(
        "ingest", help="read a Kraken WebSocket API and produce validated records to Kafka"
    )
    add_options(ingest, (*COMMON_OPTIONS, *TOPIC_OPTIONS, *INGEST_OPTIONS, *HTTP_OPTIONS))
    ingest.set_defaults(handler=_cmd_ingest)

    detect = commands.add_parser(
        "detect",
        help="detect anomalies in a feed's records; write them to Kafka and PostgreSQL",
    )
    add_options(
        detect,
        (*COMMON_OPTIONS, *TOPIC_OPTIONS, *POSTGRES_OPTIONS, *DETECT_OPTIONS, *HTTP_OPTIONS),
    )
    detect.set_defaults(handler=_cmd_detect)

    from krakenfeed.replay.command import register as register_replay_server

    register_replay_server(commands)

    from krakenfeed.local.command import register as register_local

    register_local(commands)

    commands.add_parser(
        OPERATOR_COMMAND,
        add_help=False,
        help=f"run the KrakenFeed operator; the same as {OPERATOR_SCRIPT} (see its --help)",
    )
    return parser


OPERATOR_COMMAND = "operator"
OPERATOR_SCRIPT = "krakenfeed-operator"


def _run_operator(argv: list[str]) -> int:
    """Hand the arguments to the operator's own console script. Found by name
    through the package metadata, so no worker module imports the operator."""
    from importlib.metadata import entry_points

    scripts = entry_points(group="console_scripts", name=OPERATOR_SCRIPT)
    if not scripts:
        raise SystemExit(f"krakenfeed operator: {OPERATOR_SCRIPT} is not installed")
    try:
        run = next(iter(scripts)).load()
    except ImportError as exc:
        raise SystemExit(
            f"krakenfeed operator needs the operator extra (pip install 'krakenfeed[operator]'):"
            f" {exc}"
        ) from None
    return int(run(argv))


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == [OPERATOR_COMMAND]:
        return _run_operator(arguments[1:])
    args = build_parser().parse_args(arguments)
    configure_logging(args.log_level)
    handler: Callable[[argparse.Namespace], int] = args.handler
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
