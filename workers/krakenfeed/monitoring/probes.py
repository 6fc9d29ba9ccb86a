"""Dependencies checked in the background, so that a readiness probe answers at
once with the latest finding, whatever a dependency does.

Each check runs on a thread of its own every ``interval_s``; a check that has not
returned within ``timeout_s`` (a broker that stopped answering, say) counts as
failed until it does.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Self

log = logging.getLogger(__name__)


class Periodic:
    """``tick()`` now and every ``interval_s`` after, on a thread of its own, until
    stopped."""

    def __init__(self, thread_name: str, interval_s: float) -> None:
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=thread_name, daemon=True)

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def tick(self) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        while not self._stop.is_set():
            self.tick()
            self._stop.wait(self._interval_s)


class Probe(Periodic):
    """``check()`` raises when the dependency cannot be reached."""

    def __init__(
        self,
        name: str,
        check: Callable[[], None],
        *,
        interval_s: float = 1.0,
        timeout_s: float = 3.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(f"probe-{name}", interval_s)
        self.name = name
        self._check = check
        self._timeout_s = timeout_s
        self._monotonic = monotonic
        self._problem: str | None = "not checked yet"
        self._running_since: float | None = None

    @property
    def problem(self) -> str | None:
        """Why the dependency is not reachable, or None when it is."""
        started = self._running_since
        if started is not None and self._monotonic() - started > self._timeout_s:
            return f"{self.name}: no answer for {self._monotonic() - started:.1f} s"
        return self._problem

    def tick(self) -> None:
        self._running_since = self._monotonic()
        try:
            self._check()
        except Exception as exc:
            problem = f"{self.name}: {_one_line(exc)}"
            if self._problem is None:
                log.warning("%s unreachable: %s", self.name, problem)
            self._problem = problem
        else:
            if self._problem is not None and self._problem != "not checked yet":
                log.info("%s reachable again", self.name)
            self._problem = None
        finally:
            self._running_since = None


def _one_line(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def postgres_check(conninfo: str, connect: Callable[[str], Any]) -> Callable[[], None]:
    """``SELECT 1`` on a connection of the probe's own, opened again after a failure."""
    connection: list[Any] = []

    def check() -> None:
        try:
            if not connection:
                connection.append(connect(conninfo))
            connection[0].execute("SELECT 1")
        except Exception:
            if connection:
                connection.pop().close()
            raise

    return check
