"""``krakenfeed replay-server``: a local Kraken for the ingest worker to connect to."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Final

from krakenfeed.contracts import Option

REPLAY_OPTIONS: Final = (
    Option(
        flag="--capture",
        help="capture file to replay (JSON lines, .gz allowed); without it a session is generated",
    ),
    Option(
        flag="--generate-products",
        is_list=True,
        default="PF_XBTUSD,PI_XBTUSD,BTC/USD,ETH/USD",
        help="products of the generated session; ids with a '/' are spot pairs, others futures",
    ),
    Option(
        flag="--generate-count",
        default="1000",
        help="frames per product and channel (ticker, trade) in the generated session",
    ),
    Option(flag="--seed", default="0", help="seed of the generated session"),
    Option(
        flag="--pace",
        default="max",
        help="'max' (as fast as the client reads), 'original', or a speed-up such as '10x'",
    ),
    Option(
        flag="--keep-times",
        default="false",
        choices=("true", "false"),
        help="send the session's own exchange times instead of shifting them to now",
    ),
    Option(
        flag="--live",
        default="false",
        choices=("true", "false"),
        help=(
            "serve the session as one market every connection joins where it stands,"
            " so a reconnecting client gets what comes next rather than a rerun"
        ),
    ),
    Option(
        flag="--faults",
        help=(
            "faults per connection in arrival order, e.g. 'drop@40 | refuse:429 |"
            " close:1011@25+inject:malformed@5 | silence@10 | ok | drop@40*50';"
            " faults: drop, close:CODE, silence[:S], inject:malformed|schema|alert|error,"
            " skip:N, rate-limit:BURST, reject:PRODUCT, refuse:STATUS, mute:CHANNEL;"
            " @N fires after"
            " N data frames"
        ),
    ),
    Option(
        flag="--heartbeat-interval-s",
        help="seconds between heartbeats on both APIs instead of Kraken's (10 s futures, 1 s spot)",
    ),
    Option(flag="--host", default="127.0.0.1", help="address to listen on"),
    Option(flag="--port", default="0", help="port to listen on; 0 picks a free one"),
)


def parse_pace(text: str) -> float | None:
    """``max`` → None, ``original`` → 1.0, ``10x`` → 10.0."""
    if text == "max":
        return None
    if text == "original":
        return 1.0
    try:
        pace = float(text.removesuffix("x"))
    except ValueError:
        pace = 0.0
    if not text.endswith("x") or not pace > 0:
        raise ValueError(f"--pace: got {text!r}; use max, original or a speed-up such as 10x")
    return pace


def _integer(flag: str, text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise ValueError(f"{flag}: got {text!r}; expected an integer >= {minimum}")
    return value


def _seconds(flag: str, text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise ValueError(f"{flag}: got {text!r}; expected a number of seconds > 0")
    return value


def _run(args: argparse.Namespace) -> int:
    from krakenfeed.replay.capture import read_capture
    from krakenfeed.replay.faults import parse_script
    from krakenfeed.replay.server import ReplayServer
    from krakenfeed.replay.session import generate_session, merge_sessions, session_from_capture

    try:
        pace = parse_pace(args.pace)
        port = _integer("--port", args.port, 0)
        faults = parse_script(args.faults) if args.faults else []
        heartbeat_s = _seconds("--heartbeat-interval-s", args.heartbeat_interval_s)
        if args.capture:
            session = session_from_capture(read_capture(args.capture))
        else:
            count = _integer("--generate-count", args.generate_count, 0)
            seed = _integer("--seed", args.seed, 0)
            futures = [p for p in args.generate_products if "/" not in p]
            spot = [p for p in args.generate_products if "/" in p]
            parts = []
            if futures:
                parts.append(
                    generate_session("futures", futures, count_per_product_channel=count, seed=seed)
                )
            if spot:
                parts.append(
                    generate_session("spot", spot, count_per_product_channel=count, seed=seed)
                )
            session = merge_sessions(*parts)
    except (OSError, ValueError) as exc:
        raise SystemExit(f"krakenfeed replay-server: {exc}") from None
    if faults:
        print(f"scripted faults for the first {len(faults)} connections", file=sys.stderr)

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    keep_times = args.keep_times == "true"
    server = ReplayServer(
        session,
        host=args.host,
        port=port,
        pace=pace,
        keep_times=keep_times,
        live=args.live == "true",
        faults=faults,
        heartbeat_interval_s=heartbeat_s,
    )
    with server:
        print(f"futures {server.url('futures')}", flush=True)
        print(f"spot {server.url('spot')}", flush=True)
        stop.wait()
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``replay-server`` to the ``krakenfeed`` command."""
    # Imported here: the CLI imports this module while it is itself being imported.
    from krakenfeed.cli import add_options

    parser = subparsers.add_parser(
        "replay-server",
        help="serve a capture or a generated session as Kraken's futures and spot WebSockets",
    )
    add_options(parser, REPLAY_OPTIONS)
    parser.set_defaults(handler=_run)
