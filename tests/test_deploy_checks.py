"""The kind end-to-end job's assertions, as far as this machine can run them.

- Its PostgreSQL check (``tests/deploy_checks.py``) runs here against the harness's
  PostgreSQL; in the workflow it runs against the CloudNativePG service.
- Its Jaeger check needs Jaeger's query API, which this machine cannot run: only the
  GitHub job exercises it.
- The example the job applies reads the stack's replay server as the job installs
  it, and the detector settings the job gives it find anomalies in the session that
  server generates (real protocol and detectors).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec
import psycopg
import pytest
import yaml

from krakenfeed.contracts import FeedId, Ticker, Trade, record_timestamp_ms
from krakenfeed.detect.config import DetectorConfig
from krakenfeed.detect.engine import DetectorEngine
from krakenfeed.ingest.protocol import FuturesProtocol, SpotProtocol, ValidationSettings
from krakenfeed.replay.command import REPLAY_OPTIONS
from krakenfeed.replay.session import generate_session
from krakenfeed.store import migrate
from tests.deploy_checks import table_counts, wait_for_anomalies
from tests.deploy_tools import Charts

ROOT = Path(__file__).parents[1]


def _insert_anomalies(url: str, feed: FeedId, count: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        migrate(conn)
        for index in range(count):
            conn.execute(
                "INSERT INTO anomalies (feed, product, detector, event_time_ms,"
                " detected_time_ns, value, baseline_low, baseline_high, score, severity)"
                " VALUES (%s, 'PF_XBTUSD', 'price_jump', %s, %s, 1.5, 0.9, 1.1, 9.0, 'warning')",
                (str(feed), 1_790_000_000_000 + index, 1_790_000_000_000_000_000 + index),
            )


def test_a_feed_with_anomaly_rows_passes(postgres_url: str, feed: FeedId) -> None:
    _insert_anomalies(postgres_url, feed, 3)
    counts = wait_for_anomalies(postgres_url, str(feed), minimum=3, timeout_s=0, poll_s=0)
    assert counts == {"ticker": 0, "trades": 0, "anomalies": 3, "quality_events": 0}


def test_another_feeds_rows_do_not_count(postgres_url: str, feed: FeedId) -> None:
    _insert_anomalies(postgres_url, feed, 2)
    other = FeedId(feed.namespace, feed.name + "-other")
    with pytest.raises(AssertionError, match=r"1 anomaly rows for feed .*-other.*'anomalies': 0"):
        wait_for_anomalies(postgres_url, str(other), timeout_s=0.2, poll_s=0.1)


def test_a_database_the_detector_never_migrated_reports_missing_tables(
    postgres_url: str,
) -> None:
    assert table_counts(postgres_url, "test/none") == {
        "ticker": -1,
        "trades": -1,
        "anomalies": -1,
        "quality_events": -1,
    }
    with pytest.raises(AssertionError, match="'anomalies': -1"):
        wait_for_anomalies(postgres_url, "test/none", timeout_s=0, poll_s=0)


def test_the_command_polls_until_the_rows_exist(postgres_url: str, feed: FeedId) -> None:
    """The workflow starts the command before the detector has written anything."""
    _insert_anomalies(postgres_url, feed, 0)
    checker = subprocess.Popen(
        [sys.executable, "-m", "tests.deploy_checks", "--timeout-s", "60", "--poll-s", "0.2",
         "anomalies", "--postgres-url", postgres_url, "--feed", str(feed)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        _insert_anomalies(postgres_url, feed, 1)
        out, err = checker.communicate(timeout=60)
    finally:
        checker.kill()
    assert checker.returncode == 0, err
    assert "'anomalies': 1" in out


def test_the_command_fails_with_what_it_saw(postgres_url: str, feed: FeedId) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tests.deploy_checks", "--timeout-s", "0", "anomalies",
         "--postgres-url", postgres_url, "--feed", str(feed)],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert "FAILED: expected 1 anomaly rows" in result.stderr
    assert "'anomalies': -1" in result.stderr


E2E = ROOT / ".github/workflows/kind-e2e.yml"


def _e2e_stack(tmp_path: Path) -> list[dict[str, Any]]:
    """The stack as the kind job installs it: its `helm install --set` values, rendered."""
    workflow = yaml.safe_load(E2E.read_text())
    (install,) = [
        s["run"] for s in workflow["jobs"]["e2e"]["steps"] if "helm install" in s.get("run", "")
    ]
    values: dict[str, Any] = {}
    for assignment in re.findall(r"--set (\S+)", install):
        *path, leaf = assignment.split("=")[0].split(".")
        node = values
        for key in path:
            node = node.setdefault(key, {})
        value = assignment.split("=", 1)[1]
        node[leaf] = {"true": True, "false": False}.get(value, value)
    values_file = tmp_path / "e2e-values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    charts = Charts(tmp_path / "helm")
    return charts.template(
        "krakenfeed-stack", values_file, namespace=workflow["env"]["NAMESPACE"],
        release="krakenfeed", kube_version="1.32",
    )  # fmt: skip


def _replay_arguments(stack: list[dict[str, Any]]) -> dict[str, str]:
    """The replay server's options as the stack's Deployment sets them, else defaults."""
    (server,) = [
        d for d in stack
        if d["kind"] == "Deployment" and d["spec"]["template"]["spec"]["containers"][0]
        .get("command") == ["krakenfeed", "replay-server"]
    ]  # fmt: skip
    (container,) = server["spec"]["template"]["spec"]["containers"]
    options = {option.flag: option.default or "" for option in REPLAY_OPTIONS}
    for argument in container["args"]:
        flag, value = argument.split("=", 1)
        assert flag in options, flag
        options[flag] = value
    return options


def test_the_e2e_example_reads_the_stacks_replay_server(tmp_path: Path) -> None:
    workflow = yaml.safe_load(E2E.read_text())
    stack = _e2e_stack(tmp_path)
    (service,) = [d for d in stack if d["kind"] == "Service" and "replay" in d["metadata"]["name"]]
    base = f"ws://{service['metadata']['name']}:{service['spec']['ports'][0]['port']}"
    feed = yaml.safe_load((ROOT / workflow["env"]["EXAMPLE"]).read_text())
    assert feed["metadata"]["name"] == workflow["env"]["FEED"]
    urls = {source["api"]: source["url"] for source in feed["spec"]["sources"]}
    assert urls == {"futures": f"{base}/ws/v1", "spot": f"{base}/v2"}
    products = {p for source in feed["spec"]["sources"] for p in source["products"]}
    assert products <= set(_replay_arguments(stack)["--generate-products"].split(","))


def test_the_e2e_detector_settings_find_anomalies_in_the_replayed_session(tmp_path: Path) -> None:
    workflow = yaml.safe_load(E2E.read_text())
    settings = json.loads(workflow["env"]["DETECTOR_SETTINGS"])
    config = msgspec.convert(settings, DetectorConfig)
    options = _replay_arguments(_e2e_stack(tmp_path))
    assert options["--capture"] == "", "the stack's replay server generates its session"
    products = options["--generate-products"].split(",")
    found: Counter[tuple[str, str]] = Counter()
    for api, protocol_type in (("futures", FuturesProtocol), ("spot", SpotProtocol)):
        mine = [p for p in products if ("/" in p) == (api == "spot")]
        session = generate_session(
            api, mine, count_per_product_channel=int(options["--generate-count"]),
            seed=int(options["--seed"]),
        )  # fmt: skip
        protocol = protocol_type(mine, ["ticker", "trade"], ValidationSettings(max_clock_skew_ms=0))
        protocol.subscribe_requests()
        engine = DetectorEngine(FeedId("krakenfeed", workflow["env"]["FEED"]), config)
        states = {product: engine.new_state(product) for product in mine}
        for frame in session.frames[api]:
            raw = (frame.verbatim or json.dumps(frame.payload)).encode()
            received_ns = session.start_ns + frame.offset_ns
            for record in protocol.handle(raw, received_ns):
                if isinstance(record, Ticker | Trade):
                    state = states[record.product]
                    for anomaly in engine.process(
                        state, record, record_timestamp_ms(record), received_ns
                    ):
                        found[(api, anomaly.detector)] += 1
    assert sum(found.values()) >= 3, found
