"""`krakenfeed operator` and `krakenfeed-operator`: one command line, flags or env."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from krakenfeed.cli import main as krakenfeed_main
from krakenfeed_operator.config import parse_config
from tests.kube_emulator import emulator, eventually
from tests.test_operator_kopf import free_port
from tests.trace_receiver import TraceReceiver


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


def test_the_command_runs_the_operator_on_the_chosen_namespace(
    tmp_path: Path, otlp: TraceReceiver
) -> None:
    """`krakenfeed operator` end to end: flags → kopf.run → children, liveness, a
    span per reconcile at the OTLP receiver, JSON log lines, clean exit."""
    with emulator(["markets", "elsewhere"]) as kube:
        port = free_port()
        env = {
            **os.environ,
            "KUBECONFIG": str(kube.kubeconfig(tmp_path / "kubeconfig")),
            "KRAKENFEED_WATCH_NAMESPACES": "markets",
            **otlp.env(),
            "OTEL_SERVICE_NAME": "krakenfeed-operator-cli-test",
        }
        command = [sys.executable, "-m", "krakenfeed", "operator", "--liveness-port", str(port)]
        process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
        try:
            for namespace in ("markets", "elsewhere"):
                kube.create(
                    f"/apis/krakenfeed.io/v1alpha1/namespaces/{namespace}/krakenfeeds",
                    {
                        "apiVersion": "krakenfeed.io/v1alpha1",
                        "kind": "KrakenFeed",
                        "metadata": {"name": "btc", "namespace": namespace},
                        "spec": {"sources": [{"api": "futures", "products": ["PF_XBTUSD"]}]},
                    },
                )
            eventually(
                lambda: kube.get("/apis/apps/v1/namespaces/markets/deployments/btc-detector")
            )
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
                assert response.status == 200
            assert kube.items("/apis/apps/v1/namespaces/elsewhere/deployments") == []
        finally:
            process.terminate()
            _, stderr = process.communicate(timeout=30)
        assert process.returncode == 0, stderr
    reconciles = otlp.spans(lambda s: s.service == "krakenfeed-operator-cli-test")
    assert reconciles, stderr
    assert {s.name for s in reconciles} == {"reconcile KrakenFeed"}
    assert {
        (s.attributes["k8s.namespace.name"], s.attributes["krakenfeed.feed"]) for s in reconciles
    } == {("markets", "btc")}
    assert all(s.kind == "INTERNAL" and s.parent_span_id == "" for s in reconciles)
    entries = [json.loads(line) for line in stderr.splitlines() if line.strip()]
    assert {"time", "level", "logger", "message"} <= set(entries[0])
