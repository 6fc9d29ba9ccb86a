"""Stopping ``krakenfeed up`` from outside: Ctrl-C (SIGINT to the terminal's whole
process group) or SIGTERM stops ingest, then the detector, then the servers, and
keeps what was stored. A killed ``up`` takes its workers and broker along, and the
next command on its data directory stops the database it left running."""

from __future__ import annotations

import json
import os
import re
import signal
import time

from krakenfeed.contracts.monitoring import DETECTOR_CONSUMED
from krakenfeed.embedded import wait_until
from krakenfeed.local.store import local_postgres, running_port
from krakenfeed.store.connection import connect
from tests.scrape import Scrape, ready
from tests.up_harness import local_home


def test_ctrl_c_stops_everything_in_order_and_keeps_the_rows() -> None:
    with local_home() as home, home.running("up", "--demo", "--pace", "40x") as up:
        # Slow enough that the replay is still playing when the signal arrives: the
        # first anomaly (a flat line) is printed as it happens, a quarter of the way in.
        wait_until(lambda: up.printed("flat_line"), 60, "an anomaly")
        running = home.leftovers()
        assert any("tansu" in p for p in running), running
        assert any("postgres" in p for p in running), running
        assert sum(" ingest " in p or " detect " in p for p in running) == 2, running
        _check_endpoints("".join(up.lines))
        # The results commands use the running server rather than start their own.
        port = running_port(home.data_dir)

        def stored_flat_lines() -> list[str]:
            listed = home.run("anomalies", "--format", "json", "--detector", "flat_line")
            assert listed.returncode == 0, listed.stderr
            return [a["detector"] for a in json.loads(listed.stdout)]

        # The anomaly reaches Kafka at once and PostgreSQL at the next checkpoint.
        wait_until(lambda: stored_flat_lines() == ["flat_line"], 10, "the stored anomaly")
        assert running_port(home.data_dir) == port

        os.killpg(up.process.pid, signal.SIGINT)
        code, output = up.wait(timeout=60)
        assert code == 0, output
        assert "stopped in order (SIGINT received): ingest-futures exit 0, detector exit 0" in (
            output
        )
        deadline = time.monotonic() + 5
        while home.leftovers() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert home.leftovers() == []
        assert running_port(home.data_dir) is None
        with local_postgres(home.data_dir) as url, connect(url) as conn:
            stored = conn.execute("SELECT count(*) FROM anomalies").fetchone()
        assert stored is not None and stored[0] >= 1


def _check_endpoints(printed: str) -> None:
    # Each worker serves its own metrics and probes on the port up printed for it.
    ports = {
        name: int(port)
        for name, port in re.findall(
            r"(ingest-futures|detector) http://127\.0\.0\.1:(\d+)/metrics", printed
        )
    }
    assert ports.keys() == {"ingest-futures", "detector"}, printed
    assert len(set(ports.values())) == 2
    for name, port in ports.items():
        wait_until(lambda port=port: ready(port)[0] == 200, 30, f"{name} ready")
    consumed = Scrape(ports["detector"]).samples.get(DETECTOR_CONSUMED.name, {})
    assert sum(consumed.values()) > 0, consumed


def test_a_killed_up_leaves_only_its_database_which_the_next_command_stops() -> None:
    with local_home() as home, home.running("up", "--demo", "--pace", "40x") as up:
        wait_until(lambda: up.printed("flat_line"), 60, "an anomaly")
        up.process.kill()
        up.wait(timeout=10)

        def only_postgres_left() -> bool:
            left = home.leftovers()
            return bool(left) and all("postgres" in p for p in left)

        # The kernel kills the workers and Tansu when up dies; PostgreSQL,
        # started by pg_ctl in a session of its own, stays until someone stops it.
        wait_until(only_postgres_left, 20, "the workers and the broker to end")
        listed = home.run("anomalies", "--format", "json")
        assert listed.returncode == 0, listed.stderr
        assert json.loads(listed.stdout), "what the detector committed before up died"
        wait_until(lambda: home.leftovers() == [], 10, "the adopted PostgreSQL to stop")
        assert running_port(home.data_dir) is None
