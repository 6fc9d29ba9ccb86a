"""The supervisor restarts a worker that exits with growing delays, shows the wait
as the connection state, and stops workers in order without leaving any behind; a
replay ends only once everything is committed and the topics stay still."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from krakenfeed.embedded import wait_until
from krakenfeed.local.supervisor import Backoff, ChildSpec, ChildState, Supervisor
from krakenfeed.local.up import ReplayEnd
from krakenfeed.local.view import connection_state

EXITS_AT_ONCE = [sys.executable, "-c", "raise SystemExit(3)"]
SLEEPS = [sys.executable, "-c", "import time; time.sleep(60)"]
IGNORES_SIGTERM = [
    sys.executable,
    "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)",
]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "State:\tZ" not in state


def test_backoff_doubles_up_to_its_cap() -> None:
    backoff = Backoff(first_s=1, factor=2, max_s=5)
    assert [backoff.delay(n) for n in range(1, 6)] == [1, 2, 4, 5, 5]


def test_a_crashing_worker_is_restarted_with_growing_delays_shown_as_connecting() -> None:
    clock = FakeClock()
    supervisor = Supervisor(
        [ChildSpec("ingest-futures", EXITS_AT_ONCE)], Backoff(first_s=1, reset_after_s=60), clock
    )
    child = supervisor.children["ingest-futures"]
    supervisor.start()
    assert connection_state(child, seen_frames=False) == "connecting"
    assert child.process is not None
    child.process.wait(10)

    supervisor.poll()
    assert child.state is ChildState.BACKING_OFF
    assert (child.attempt, child.last_exit) == (1, 3)
    assert "connecting (attempt 2, next in 1 s)" in connection_state(child, seen_frames=False)
    supervisor.poll()
    assert child.restarts == 0, "the delay has not passed"

    clock.now += 1
    supervisor.poll()
    assert (child.state, child.restarts) == (ChildState.RUNNING, 1)
    child.process.wait(10)
    supervisor.poll()
    assert child.attempt == 2
    assert "connecting (attempt 3, next in 2 s)" in connection_state(child, seen_frames=False)

    # A run that lasted longer than reset_after_s was working: its crash starts over.
    clock.now += 2
    supervisor.poll()
    clock.now += 61
    child.process.wait(10)
    supervisor.poll()
    assert child.attempt == 1
    assert child.seconds_to_restart() == 1
    supervisor.stop([])


def test_stop_goes_in_order_and_kills_what_ignores_sigterm() -> None:
    supervisor = Supervisor(
        [ChildSpec("detector", SLEEPS), ChildSpec("ingest-spot", IGNORES_SIGTERM)]
    )
    supervisor.start()
    stubborn = supervisor.children["ingest-spot"].process
    assert stubborn is not None
    # Wait until it has installed its handler, or SIGTERM would still end it.
    wait_until(lambda: _ignores_sigterm(stubborn.pid), 10, "the child to ignore SIGTERM")
    pids = supervisor.pids()
    exits = supervisor.stop(["ingest-spot", "detector"], timeout=0.5)
    assert list(exits) == ["ingest-spot", "detector"]
    assert exits == {"ingest-spot": -signal.SIGKILL, "detector": -signal.SIGTERM}
    assert not any(_alive(pid) for pid in pids)


def _ignores_sigterm(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status").read_text()
    ignored = next(line for line in status.splitlines() if line.startswith("SigIgn:"))
    return bool(int(ignored.split()[1], 16) & (1 << (signal.SIGTERM - 1)))


def test_workers_end_with_their_supervisor_even_when_it_is_killed() -> None:
    script = (
        "import sys, time\n"
        "from krakenfeed.local.supervisor import ChildSpec, Supervisor\n"
        f"s = Supervisor([ChildSpec('detector', {SLEEPS!r})])\n"
        "s.start()\n"
        "print(s.pids()[0], flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=os.environ
    )
    try:
        assert parent.stdout is not None
        worker = int(parent.stdout.readline())
        assert _alive(worker)
        parent.kill()
        parent.wait()
        wait_until(lambda: not _alive(worker), 10, "the orphaned worker to be killed")
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if parent.stdout:
            parent.stdout.close()


def test_a_replay_ends_once_everything_is_committed_and_the_topics_stay_still() -> None:
    clock = FakeClock()
    end = ReplayEnd(expected=100, clock=clock, quiet_s=1, uncounted_quiet_s=5)
    assert not end.reached(sent_all=False, total=100, lag=0, frames_seen=100)
    assert not end.reached(sent_all=True, total=100, lag=0, frames_seen=100)
    clock.now += 0.5
    assert not end.reached(sent_all=True, total=100, lag=3, frames_seen=100), "not committed"
    assert not end.reached(sent_all=True, total=100, lag=0, frames_seen=100)
    clock.now += 0.9
    assert not end.reached(sent_all=True, total=101, lag=0, frames_seen=100), "still moving"
    clock.now += 1
    assert end.reached(sent_all=True, total=101, lag=0, frames_seen=100)

    # Fewer records seen than frames sent: they may yet arrive, so wait longer.
    uncounted = ReplayEnd(expected=100, clock=clock, quiet_s=1, uncounted_quiet_s=5)
    assert not uncounted.reached(sent_all=True, total=90, lag=0, frames_seen=90)
    clock.now += 4
    assert not uncounted.reached(sent_all=True, total=90, lag=0, frames_seen=90)
    clock.now += 1
    assert uncounted.reached(sent_all=True, total=90, lag=0, frames_seen=90)
