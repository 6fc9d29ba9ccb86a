"""Flags and their KRAKENFEED_* environment variables."""

from __future__ import annotations

import subprocess
import sys

import pytest

from krakenfeed.cli import add_options, build_parser
from krakenfeed.contracts import COMMON_OPTIONS, INGEST_OPTIONS, POSTGRES_OPTIONS


def _parser(monkeypatch: pytest.MonkeyPatch, **env: str) -> object:
    import argparse

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    parser = argparse.ArgumentParser(prog="krakenfeed ingest")
    add_options(parser, (*COMMON_OPTIONS, *POSTGRES_OPTIONS, *INGEST_OPTIONS))
    return parser


def test_env_vars_set_every_flag_and_the_command_line_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    parser = _parser(
        monkeypatch,
        KRAKENFEED_FEED="btc",
        KRAKENFEED_BROKER="kafka:9092",
        KRAKENFEED_API="spot",
        KRAKENFEED_PRODUCTS="BTC/USD, ETH/USD",
        KRAKENFEED_CHANNELS="trade",
    )
    args = parser.parse_args(["--broker", "other:9093"])  # type: ignore[attr-defined]
    assert args.feed == "btc"
    assert args.namespace == "local"
    assert args.broker == "other:9093"
    assert args.api == "spot"
    assert args.products == ["BTC/USD", "ETH/USD"]
    assert args.channels == ["trade"]
    assert args.postgres_url is None


def test_a_bad_value_names_the_flag_the_value_and_the_allowed_values(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = _parser(monkeypatch, KRAKENFEED_FEED="btc", KRAKENFEED_PRODUCTS="PF_XBTUSD")
    with pytest.raises(SystemExit):
        parser.parse_args(["--api", "margin"])  # type: ignore[attr-defined]
    assert "argument --api: got 'margin'; allowed: futures, spot" in capsys.readouterr().err


def test_a_bad_env_value_says_which_variable_it_came_from(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = _parser(
        monkeypatch,
        KRAKENFEED_FEED="btc",
        KRAKENFEED_API="futures",
        KRAKENFEED_PRODUCTS="PF_XBTUSD",
        KRAKENFEED_CHANNELS="ticker,book",
    )
    with pytest.raises(SystemExit):
        parser.parse_args([])  # type: ignore[attr-defined]
    err = capsys.readouterr().err
    assert "argument --channels: got 'book' from KRAKENFEED_CHANNELS; allowed: ticker, trade" in err


def test_a_required_flag_is_satisfied_by_its_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    parser = _parser(monkeypatch, KRAKENFEED_API="futures", KRAKENFEED_PRODUCTS="PF_XBTUSD")
    with pytest.raises(SystemExit):
        parser.parse_args([])  # type: ignore[attr-defined]
    monkeypatch.setenv("KRAKENFEED_FEED", "btc")
    parser = _parser(monkeypatch, KRAKENFEED_API="futures", KRAKENFEED_PRODUCTS="PF_XBTUSD")
    assert parser.parse_args([]).feed == "btc"  # type: ignore[attr-defined]


def test_help_documents_each_flag_with_its_env_var() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "krakenfeed", "detect", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    for env in ("KRAKENFEED_NAMESPACE", "KRAKENFEED_FEED", "KRAKENFEED_BROKER"):
        assert env in result.stdout
    assert "KRAKENFEED_POSTGRES_URL" in result.stdout
    assert "PGHOST" in result.stdout


def test_an_invalid_feed_name_is_reported_with_its_flags() -> None:
    args = build_parser().parse_args(["detect", "--feed", "Not_Valid"])
    with pytest.raises(SystemExit, match="--namespace/--feed: feed name 'Not_Valid'"):
        args.handler(args)


def test_a_bad_detector_config_names_the_field_before_anything_starts() -> None:
    args = build_parser().parse_args(
        [
            "detect",
            "--feed",
            "btc",
            "--detector-config",
            '{"price_jump": {"threshold": "high"}}',
        ]
    )
    with pytest.raises(SystemExit, match=r"--detector-config: .* `\$\.price_jump\.threshold`"):
        args.handler(args)


def test_the_topics_the_operator_overrides_are_the_topics_the_workers_use(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import msgspec

    from krakenfeed.cli import _feed
    from krakenfeed.contracts import KrakenFeedSpec, Stream, topic
    from krakenfeed_operator.builders import Owner, shared_env, topic_names

    owner = Owner("markets", "btc", "uid-1")
    spec = msgspec.convert(
        {
            "sources": [{"api": "futures", "products": ["PI_XBTUSD"]}],
            "kafka": {"topics": {"anomalies": "alerts", "dlq": "btc.dead-letters"}},
        },
        KrakenFeedSpec,
    )
    for name, value in shared_env(owner, spec).items():
        monkeypatch.setenv(name, value)
    for command in ("ingest", "detect"):
        argv = [command] + (["--api", "futures", "--products", "PI_XBTUSD"] * (command == "ingest"))
        feed = _feed(build_parser().parse_args(argv))
        assert {stream: topic(feed, stream) for stream in Stream} == topic_names(owner, spec)
        assert topic(feed, Stream.ANOMALIES) == "alerts"
        assert topic(feed, Stream.TICKER) == "krakenfeed.markets.btc.ticker"


def test_a_topic_override_that_kafka_would_refuse_names_its_flag(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KRAKENFEED_DLQ_TOPIC", "dead letters")
    args = build_parser().parse_args(["detect", "--feed", "btc"])
    with pytest.raises(SystemExit, match=r"--<stream>-topic: dlq topic 'dead letters'"):
        args.handler(args)
