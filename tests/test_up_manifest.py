"""What ``krakenfeed up`` says about bad input before it starts anything.

Given a manifest that breaks a rule of the spec model, ``up`` exits 2 with one
line naming the field path, the bad value and what is allowed. Given no
PostgreSQL binaries, it says how to install them.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from krakenfeed.cli import main
from krakenfeed.local.manifest import ManifestError, load_manifest
from tests.up_harness import local_home

EXAMPLES = sorted((Path(__file__).parents[1] / "examples").glob("*/*.yaml"))


def _manifest(tmp_path: Path, spec: object, **top: object) -> Path:
    document = {
        "apiVersion": "krakenfeed.io/v1alpha1",
        "kind": "KrakenFeed",
        "metadata": {"name": "btc"},
        "spec": spec,
        **top,
    }
    path = tmp_path / "feed.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            {"sources": [{"api": "fut", "products": ["PF_XBTUSD"]}]},
            "spec.sources[0].api: got 'fut'; allowed: futures, spot",
        ),
        (
            {"sources": [{"api": "futures", "products": ["PF_XBTUSD"], "channels": ["book"]}]},
            "spec.sources[0].channels[0]: got 'book'; allowed: ticker, trade",
        ),
        (
            {"sources": [{"api": "futures", "products": ["pf_xbtusd"]}]},
            "spec.sources[0].products[0]: got 'pf_xbtusd'; allowed: a value matching",
        ),
        (
            {"sources": [{"api": "spot", "products": ["BTC/USD"], "url": "http://x"}]},
            "spec.sources[0].url: got 'http://x'; allowed: a value matching ^wss?://",
        ),
        ({"sources": []}, "spec.sources: got []; allowed: 1 to 8 items"),
        (
            {"sourcs": []},
            "spec: Object contains unknown field `sourcs`; allowed fields: detector, ingest,"
            " kafka, postgres, retentionDays, sources, suspend, telemetry",
        ),
        (
            {"sources": [{"api": "futures", "products": ["BTC/USD"]}]},
            "spec.sources[0]: products[0] 'BTC/USD' is not a futures product id",
        ),
    ],
)
def test_an_invalid_manifest_exits_2_naming_path_value_and_allowed_values(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], spec: object, message: str
) -> None:
    path = _manifest(tmp_path, spec)
    assert main(["up", str(path)]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"krakenfeed up: {path}: {message}"), error
    assert error.count("\n") == 1


def test_the_manifest_envelope_is_checked_too(tmp_path: Path) -> None:
    path = _manifest(tmp_path, {"sources": []}, apiVersion="v1")
    with pytest.raises(
        ManifestError, match=re.escape("apiVersion: got 'v1'; allowed: krakenfeed.io/v1alpha1")
    ):
        load_manifest(path)
    path = _manifest(tmp_path, {"sources": []}, metadata={"name": "BTC Feed"})
    with pytest.raises(ManifestError, match=re.escape("metadata.name: feed name 'BTC Feed'")):
        load_manifest(path)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.parent.name)
def test_every_example_runs_as_a_local_feed(path: Path) -> None:
    feed, spec = load_manifest(path)
    assert feed.namespace == "local"
    assert spec.sources


def test_demo_and_a_manifest_exclude_each_other(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["up", str(EXAMPLES[0]), "--demo"]) == 2
    assert "--demo plays its own feed" in capsys.readouterr().err
    assert main(["up"]) == 2
    assert "give a KrakenFeed manifest (FEED.yaml), or --demo" in capsys.readouterr().err


def test_missing_postgresql_binaries_get_a_one_line_install_hint() -> None:
    with local_home() as home:
        run = subprocess.run(
            home.command("up", "--demo"),
            env={**home.env, "KRAKENFEED_PG_BIN": str(home.path / "no-postgresql")},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert run.returncode == 1, run.stdout + run.stderr
        assert run.stderr.splitlines() == [
            f"krakenfeed up: no PostgreSQL server binaries in {home.path / 'no-postgresql'}: "
            "apt-get install postgresql (or point KRAKENFEED_PG_BIN at the directory holding "
            "initdb and pg_ctl)"
        ]
        assert home.leftovers() == []


def test_an_unreachable_broker_is_named_at_once() -> None:
    with local_home() as home:
        run = home.run("up", "--demo", "--broker", "127.0.0.1:1", timeout=30)
        assert not home.data_dir.exists(), "nothing was started, so nothing is left"
    assert run.returncode == 1
    assert run.stderr == "krakenfeed up: --broker: no Kafka broker answers at 127.0.0.1:1\n"


def test_a_bad_pace_or_capture_exits_2_naming_the_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["up", "--demo", "--pace", "fast"]) == 2
    assert "krakenfeed up: --pace: got 'fast'; use max, original or a speed-up" in (
        capsys.readouterr().err
    )
    missing = tmp_path / "missing.jsonl"
    assert main(["up", str(EXAMPLES[0]), "--replay", str(missing)]) == 2
    assert capsys.readouterr().err == (
        f"krakenfeed up: --replay: cannot read {missing}: No such file or directory\n"
    )


def test_a_bad_detector_config_exits_2_before_anything_starts(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["up", "--demo", "--detector-config", '{"price_jump": {"threshold": "high"}}']) == 2
    assert capsys.readouterr().err.startswith("krakenfeed up: --detector-config: Expected `")
