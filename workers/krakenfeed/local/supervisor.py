"""Worker processes that are restarted with backoff when they exit on their own.

Each child gets its own session, so a Ctrl-C in the terminal reaches only ``up``,
which then stops the children itself, in order. On Linux a child is also asked to
be killed should ``up`` die without stopping it, so nothing outlives it.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from krakenfeed.embedded.orphans import ends_with_parent

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Backoff:
    """Delay before restart n (1-based): ``first_s * factor**(n-1)``, at most ``max_s``.

    A child that ran for ``reset_after_s`` before exiting starts again from the
    first delay: it was working, so its crash is news, not a loop.
    """

    first_s: float = 1.0
    factor: float = 2.0
    max_s: float = 30.0
    reset_after_s: float = 60.0

    def delay(self, attempt: int) -> float:
        return min(self.max_s, self.first_s * self.factor ** max(0, attempt - 1))


class ChildState(StrEnum):
    RUNNING = "running"
    BACKING_OFF = "restarting"
    STOPPED = "stopped"


@dataclass(frozen=True)
class ChildSpec:
    name: str
    argv: Sequence[str]
    env: Mapping[str, str] = field(default_factory=dict)
    log_path: Path | None = None
    http_port: int | None = None
    """Where the child serves /metrics, /livez and /readyz (its ``--http-port``)."""


def krakenfeed_argv(*args: str) -> list[str]:
    """The ``krakenfeed`` command run by this very interpreter."""
    return [sys.executable, "-m", "krakenfeed", *args]


class Child:
    def __init__(self, spec: ChildSpec, backoff: Backoff, clock: Callable[[], float]) -> None:
        self.spec = spec
        self._backoff = backoff
        self._clock = clock
        self.process: subprocess.Popen[bytes] | None = None
        self.state = ChildState.STOPPED
        self.restarts = 0
        self.attempt = 0
        """Consecutive failed runs; 0 once a run lasted ``reset_after_s``."""
        self.last_exit: int | None = None
        self.next_start = 0.0
        self._started_at = 0.0

    @property
    def name(self) -> str:
        return self.spec.name

    def start(self) -> None:
        env = {**os.environ, **self.spec.env}
        log_file = self.spec.log_path.open("ab") if self.spec.log_path else None
        try:
            self.process = subprocess.Popen(
                list(self.spec.argv),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log_file or subprocess.DEVNULL,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=ends_with_parent(),  # noqa: PLW1509
            )
        finally:
            if log_file:
                log_file.close()
        self.state = ChildState.RUNNING
        self._started_at = self._clock()

    def seconds_to_restart(self) -> float:
        return max(0.0, self.next_start - self._clock())

    def poll(self) -> None:
        """Notice an exit and schedule the restart; start it once its delay has passed."""
        now = self._clock()
        if self.state is ChildState.RUNNING and self.process is not None:
            code = self.process.poll()
            if code is None:
                return
            self.last_exit = code
            if now - self._started_at >= self._backoff.reset_after_s:
                self.attempt = 0
            self.attempt += 1
            delay = self._backoff.delay(self.attempt)
            self.next_start = now + delay
            self.state = ChildState.BACKING_OFF
            log.warning(
                "%s exited with code %d; restarting in %.1fs (its log: %s)",
                self.name,
                code,
                delay,
                self.spec.log_path or "none",
            )
        elif self.state is ChildState.BACKING_OFF and now >= self.next_start:
            self.restarts += 1
            self.start()

    def stop(self, timeout: float) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit code."""
        self.state = ChildState.STOPPED
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop within %.0fs; killing it", self.name, timeout)
                process.kill()
                process.wait()
        self.last_exit = process.returncode
        return process.returncode


class Supervisor:
    """Starts children, restarts them with backoff, stops them in a given order."""

    def __init__(
        self,
        specs: Sequence[ChildSpec],
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.children = {spec.name: Child(spec, backoff or Backoff(), clock) for spec in specs}

    def start(self) -> None:
        for child in self.children.values():
            child.start()

    def poll(self) -> None:
        for child in self.children.values():
            child.poll()

    def stop(self, order: Sequence[str], timeout: float = 15.0) -> dict[str, int | None]:
        """Stop the named children one after another, then any others."""
        names = [*order, *(name for name in self.children if name not in order)]
        return {name: self.children[name].stop(timeout) for name in names}

    def pids(self) -> list[int]:
        return [c.process.pid for c in self.children.values() if c.process is not None]
