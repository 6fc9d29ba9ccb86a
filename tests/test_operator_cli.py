"""`krakenfeed operator` and `krakenfeed-operator`: one command line, flags or env."""

from __future__ import annotations

import pytest

from krakenfeed.cli import main as krakenfeed_main
from krakenfeed_operator.config import parse_config


def test_defaults_watch_every_namespace_standalone() -> None:
    config = parse_config([], {})
    assert config.clusterwide
    assert config.peering == ""
    assert config.liveness_endpoint == "http://0.0.0.0:8080/healthz"
    assert config.resync_interval_s == 60.0


def test_namespaces_come_from_the_flag_over_the_env() -> None:
    env = {"KRAKENFEED_WATCH_NAMESPACES": "a,b", "KRAKENFEED_LIVENESS_PORT": "9090"}
    from_env = parse_config([], env)
    assert from_env.watch_namespaces == ("a", "b")
    assert not from_env.clusterwide
    assert from_env.liveness_port == 9090
    assert parse_config(["--watch-namespaces", "markets"], env).watch_namespaces == ("markets",)


def test_a_bad_value_names_the_variable(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_config([], {"KRAKENFEED_RESYNC_INTERVAL_S": "soon"})
    assert "got 'soon' (from KRAKENFEED_RESYNC_INTERVAL_S)" in capsys.readouterr().err


def test_krakenfeed_operator_dispatches_to_the_operator_script(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        krakenfeed_main(["operator", "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert "krakenfeed operator" in out
    assert "KRAKENFEED_WATCH_NAMESPACES" in out
    with pytest.raises(SystemExit):
        krakenfeed_main(["--help"])
    assert "operator" in capsys.readouterr().out
