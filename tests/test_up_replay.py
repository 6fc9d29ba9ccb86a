"""``krakenfeed up FEED.yaml --replay FILE --broker … --postgres-url …``: a capture
played through the feed's workers on a given broker and database, ending by itself
once the detector has stored every record. Nothing is embedded, so the data
directory gets no PostgreSQL."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import yaml

from krakenfeed.local.demo import demo
from krakenfeed.local.store import cluster_root
from krakenfeed.replay.capture import CaptureWriter
from krakenfeed.store.connection import connect
from tests.conftest import Kafka
from tests.up_harness import local_home

FRAMES = 600


def test_a_replayed_capture_is_stored_whole_and_up_exits_by_itself(
    tmp_path: Path, kafka: Kafka, postgres_url: str
) -> None:
    name = f"recorded-{uuid.uuid4().hex[:8]}"
    session = demo().session
    capture = tmp_path / "capture.jsonl.gz"
    frames = session.frames["futures"][:FRAMES]
    with CaptureWriter(capture) as writer:
        for frame in frames:
            writer.write("futures", session.start_ns + frame.offset_ns, json.dumps(frame.payload))
    manifest = tmp_path / "feed.yaml"
    manifest.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "krakenfeed.io/v1alpha1",
                "kind": "KrakenFeed",
                "metadata": {"name": name},
                "spec": {"sources": [{"api": "futures", "products": ["PF_XBTUSD"]}]},
            }
        )
    )
    with local_home() as home:
        run = home.run(
            "up", str(manifest), "--replay", str(capture), "--pace", "max",
            "--broker", kafka.bootstrap, "--postgres-url", postgres_url,
        )  # fmt: skip
        assert run.returncode == 0, run.stdout + run.stderr
        assert "the replay ended and the detector caught up" in run.stdout
        assert f"{FRAMES}/{FRAMES} frames" in run.stdout
        assert home.leftovers() == []
        assert not cluster_root(home.data_dir).exists()
    with connect(postgres_url) as conn:
        stored = conn.execute(
            "SELECT (SELECT count(*) FROM ticker WHERE feed = %(feed)s)"
            " + (SELECT count(*) FROM trades WHERE feed = %(feed)s)",
            {"feed": f"local/{name}"},
        ).fetchone()
    assert stored == (FRAMES,)
