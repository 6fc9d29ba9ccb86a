"""The ``up``, ``anomalies``, ``quality`` and ``plot`` subcommands."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Final

from krakenfeed.contracts import DETECT_OPTIONS, FeedId, Option

_DETECT: Final = {option.flag: option for option in DETECT_OPTIONS}
_POSTGRES_URL: Final = Option(
    flag="--postgres-url",
    secret=True,
    help="libpq URL of a PostgreSQL to use instead of the data directory's embedded one",
)

UP_OPTIONS: Final = (
    Option(flag="--replay", help="play this capture (JSON lines, .gz ok) instead of live Kraken"),
    Option(
        flag="--pace",
        help=(
            "replay speed: 'max', 'original' or a speed-up such as '10x'"
            " (default: original for --replay, 60x for --demo)"
        ),
    ),
    Option(
        flag="--broker",
        help="Kafka bootstrap servers to use instead of the embedded Tansu broker",
    ),
    _POSTGRES_URL,
    _DETECT["--detector-config"],
    _DETECT["--retention-days"],
)

FILTER_OPTIONS: Final = (
    Option(flag="--feed", help="feed as namespace/name, or a local feed's name"),
    Option(flag="--product", help="product id as Kraken spells it (PF_XBTUSD, BTC/USD)"),
    Option(flag="--since", help="only from then on: 30m, 2h, 7d, or an ISO 8601 time"),
    _POSTGRES_URL,
)
ANOMALY_OPTIONS: Final = (
    Option(flag="--detector", help="only this detector's anomalies (price_jump, stale, …)"),
    Option(flag="--format", default="table", choices=("table", "json"), help="output format"),
)
PLOT_OPTIONS: Final = (
    Option(flag="--width", default="1400", value_type="int", minimum=200, help="pixels"),
    Option(flag="--height", default="900", value_type="int", minimum=200, help="pixels"),
)


def _console() -> Any:
    """The terminal's width on a terminal; wide enough for a row per line in a pipe."""
    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=160)


def _fail(command: str, message: str, code: int = 1) -> int:
    print(f"krakenfeed {command}: {message}", file=sys.stderr)
    return code


def _up(args: argparse.Namespace) -> int:
    from krakenfeed.local.manifest import ManifestError, load_manifest
    from krakenfeed.local.store import LocalStoreError
    from krakenfeed.local.up import (
        BrokerUnreachableError,
        UpOptions,
        demo_options,
        replay_options,
        run_up,
    )
    from krakenfeed.replay.command import parse_pace

    common: dict[str, Any] = {
        "broker": args.broker,
        "postgres_url": args.postgres_url,
        "retention_days": args.retention_days,
        "detector_config": args.detector_config,
        "log_level": args.log_level,
    }
    if args.demo and (args.manifest or args.replay):
        return _fail("up", "--demo plays its own feed: give no FEED.yaml and no --replay", 2)
    if args.detector_config:
        # Checked here too: the detector would only say so in its log, restart after restart.
        import msgspec

        from krakenfeed.detect import DetectorConfig

        try:
            msgspec.json.decode(args.detector_config, type=DetectorConfig)
        except msgspec.DecodeError as exc:
            return _fail("up", f"--detector-config: {exc}", 2)
    try:
        if args.pace:
            parse_pace(args.pace)
        if args.demo:
            options = demo_options(args.pace, **common)
        elif not args.manifest:
            return _fail("up", "give a KrakenFeed manifest (FEED.yaml), or --demo", 2)
        else:
            feed, spec = load_manifest(Path(args.manifest))
            if args.replay:
                options = replay_options(
                    Path(args.replay), args.pace, feed=feed, spec=spec, **common
                )
            else:
                options = UpOptions(feed=feed, spec=spec, **common)
    except ManifestError as exc:
        return _fail("up", str(exc), 2)
    except OSError as exc:
        return _fail("up", f"--replay: cannot read {exc.filename}: {exc.strerror}", 2)
    except ValueError as exc:
        return _fail("up", str(exc), 2)
    try:
        return run_up(options)
    except (LocalStoreError, BrokerUnreachableError, FileNotFoundError) as exc:
        return _fail("up", str(exc))


def _filters(command: str, args: argparse.Namespace) -> Any:
    from krakenfeed.local.results import Filters, parse_since

    try:
        feed = FeedId.parse(args.feed) if args.feed else None
        since = parse_since(args.since) if args.since else None
    except ValueError as exc:
        raise SystemExit(f"krakenfeed {command}: {exc}") from None
    return Filters(feed, args.product, getattr(args, "detector", None), since)


def _results(command: str, args: argparse.Namespace) -> Any:
    from krakenfeed.local.store import cluster_root, data_dir, results_store

    if not args.postgres_url and not (cluster_root(data_dir()) / "data" / "PG_VERSION").exists():
        raise SystemExit(
            f"krakenfeed {command}: no results in {data_dir()} yet: run krakenfeed up first,"
            " or give --postgres-url"
        )
    return results_store(args.postgres_url)


def _anomalies(args: argparse.Namespace) -> int:
    from rich.table import Table

    from krakenfeed.local import results
    from krakenfeed.store.connection import connect

    with _results("anomalies", args) as url, connect(url) as conn:
        found = results.anomalies(conn, _filters("anomalies", args))
    if args.format == "json":
        print(json.dumps(found, indent=2))
        return 0
    table = Table(title=f"{len(found)} anomalies")
    for column in ("time (UTC)", "feed", "product", "detector", "severity", "value", "expected"):
        table.add_column(column)
    for a in found:
        table.add_row(
            a["time"], a["feed"], a["product"], a["detector"], a["severity"],
            f"{a['value']:.4g}", f"{a['baseline_low']:.4g}..{a['baseline_high']:.4g}",
        )  # fmt: skip
    _console().print(table)
    return 0


def _quality(args: argparse.Namespace) -> int:
    from rich.table import Table

    from krakenfeed.local import results
    from krakenfeed.store.connection import connect

    with _results("quality", args) as url, connect(url) as conn:
        report = results.quality(conn, _filters("quality", args))
    table = Table(title="data quality per product")
    for column in ("feed", "product", "tickers", "trades", "invalid frames", "sequence gaps",
                   "stale periods", "reconnects", "other events"):  # fmt: skip
        table.add_column(column)
    for q in report:
        invalid = ", ".join(f"{reason} {n}" for reason, n in sorted(q.invalid.items()))
        gaps = f"{q.sequence_gaps} ({q.missing_trades} trades missing)" if q.sequence_gaps else "0"
        stale = (
            f"{q.stale_periods} ({q.stale_seconds:.0f} s)"
            if q.stale_seconds
            else str(q.stale_periods)
        )
        other = ", ".join(f"{kind} {n}" for kind, n in sorted(q.other.items()))
        table.add_row(
            q.feed, q.product, str(q.tickers), str(q.trades), invalid or "0", gaps, stale,
            str(q.reconnects), other or "-",
        )  # fmt: skip
    _console().print(table)
    return 0


def _plot(args: argparse.Namespace) -> int:
    from krakenfeed.local import results
    from krakenfeed.local.plot import render_plot
    from krakenfeed.store.connection import connect

    with _results("plot", args) as url, connect(url) as conn:
        data = results.series(conn, _filters("plot", args))
    try:
        render_plot(data, Path(args.output), args.width, args.height)
    except ValueError as exc:
        return _fail("plot", str(exc))
    anomalies = sum(len(s.anomalies) for s in data.values())
    print(f"wrote {args.output}: {len(data)} product(s), {anomalies} anomalies marked")
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``up`` and the commands that read its results to the ``krakenfeed`` command."""
    from krakenfeed.cli import add_options

    up = subparsers.add_parser(
        "up",
        help="run a KrakenFeed on this machine: embedded Kafka and PostgreSQL, a live view",
        description=(
            "Run the feed's ingest workers and detector as supervised processes, with an "
            "embedded Tansu broker and PostgreSQL (data in $XDG_DATA_HOME/krakenfeed). "
            "A replay or the demo ends by itself; Ctrl-C stops everything in order."
        ),
    )
    up.add_argument("manifest", nargs="?", metavar="FEED.yaml", help="a KrakenFeed manifest")
    up.add_argument(
        "--demo",
        action="store_true",
        help="play the bundled demo: 20 labelled market minutes, offline, accelerated",
    )
    add_options(up, UP_OPTIONS)
    up.set_defaults(handler=_up)

    for name, handler, extra, text in (
        ("anomalies", _anomalies, ANOMALY_OPTIONS, "list the stored anomalies"),
        ("quality", _quality, (), "data-quality report per product"),
        ("plot", _plot, PLOT_OPTIONS, "plot price, spread and volume with anomalies marked"),
    ):
        parser = subparsers.add_parser(name, help=text)
        add_options(parser, (*FILTER_OPTIONS, *extra))
        if name == "plot":
            parser.add_argument("-o", "--output", required=True, help="PNG file to write")
        parser.set_defaults(handler=handler)
