"""One small HTTP server per worker process: ``GET /metrics``, ``/livez``, ``/readyz``.

A health check is a function returning the problems it sees; none means healthy.
The server answers 200 with ``ok``, or 503 with one problem per line, so that
``kubectl describe pod`` shows why a probe failed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from krakenfeed.contracts.monitoring import LIVENESS_PATH, METRICS_PATH, READINESS_PATH
from krakenfeed.monitoring.probes import Probe

log = logging.getLogger(__name__)

Check = Callable[[], list[str]]


class EndpointError(Exception):
    """The endpoint's port cannot be listened on (in use, or not allowed)."""


class HealthServer:
    """Serves ``registry`` and two checks on ``host:port`` from a daemon thread;
    port 0 binds a free port (see :attr:`port`)."""

    def __init__(
        self,
        registry: CollectorRegistry,
        live: Check,
        ready: Check,
        port: int = 0,
        host: str = "0.0.0.0",
    ) -> None:
        routes: dict[str, Callable[[], tuple[int, str, bytes]]] = {
            METRICS_PATH: lambda: (200, CONTENT_TYPE_LATEST, generate_latest(registry)),
            LIVENESS_PATH: lambda: _answer(live()),
            READINESS_PATH: lambda: _answer(ready()),
        }

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                route = routes.get(self.path.partition("?")[0])
                if route is None:
                    status, content_type, body = 404, "text/plain", b"not found\n"
                else:
                    try:
                        status, content_type, body = route()
                    except Exception as exc:
                        log.exception("GET %s failed", self.path)
                        status, content_type, body = 500, "text/plain", f"{exc}\n".encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                """Probes come every few seconds: not worth a log line each."""

        try:
            self._server = ThreadingHTTPServer((host, port), Handler)
        except OSError as exc:
            raise EndpointError(
                f"cannot serve {METRICS_PATH} on {host}:{port} (--http-port): {exc.strerror};"
                " choose a free port, or 0 for no endpoint"
            ) from None
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="http-endpoint", daemon=True
        )

    @property
    def port(self) -> int:
        port: int = self._server.server_address[1]
        return port

    def start(self) -> HealthServer:
        self._thread.start()
        log.info(
            "serving %s, %s and %s on port %d",
            METRICS_PATH,
            LIVENESS_PATH,
            READINESS_PATH,
            self.port,
        )
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> HealthServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextmanager
def serving(
    registry: CollectorRegistry,
    live: Check,
    ready: Check,
    probes: Sequence[Probe],
    port: int,
    host: str,
) -> Iterator[HealthServer]:
    """A server while the block runs; afterwards the probes it read stop too."""
    try:
        with HealthServer(registry, live, ready, port, host) as server:
            yield server
    finally:
        for probe in probes:
            probe.stop()


def _answer(problems: list[str]) -> tuple[int, str, bytes]:
    if problems:
        return 503, "text/plain; charset=utf-8", ("\n".join(problems) + "\n").encode()
    return 200, "text/plain; charset=utf-8", b"ok\n"
