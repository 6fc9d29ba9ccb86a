"""Running ``krakenfeed`` as a user would, on a data directory of its own, and
finding any process such a run left behind."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

RUN_MARKER = "KRAKENFEED_TEST_UP_RUN"


@dataclass
class LocalHome:
    """An ``XDG_DATA_HOME`` every user may enter: under root, PostgreSQL runs as
    ``postgres`` and must reach its data directory."""

    path: Path
    marker: str = field(default_factory=lambda: uuid.uuid4().hex)

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "XDG_DATA_HOME": str(self.path), RUN_MARKER: self.marker}

    @property
    def data_dir(self) -> Path:
        return self.path / "krakenfeed"

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "krakenfeed", *args]

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command(*args),
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    @contextmanager
    def running(self, *args: str) -> Iterator[Running]:
        """The command in the background, its output collected line by line; killed
        on the way out if the test did not see it end."""
        process = subprocess.Popen(
            self.command(*args),
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            # Its own process group, which the test can signal as a terminal would.
            start_new_session=True,
        )
        running = Running(process)
        try:
            yield running
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            running.reader.join(timeout=5)
            assert process.stdout is not None
            process.stdout.close()

    def leftovers(self) -> list[str]:
        """Processes that carry this home's marker in their environment or its path
        in their command line (PostgreSQL's data directory)."""
        return [f"{pid}: {command}" for pid, command in self.processes()]

    def processes(self) -> list[tuple[int, str]]:
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                environ = (entry / "environ").read_bytes()
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if (
                f"{RUN_MARKER}={self.marker}".encode() in environ
                or str(self.path).encode() in cmdline
            ):
                command = cmdline.replace(b"\0", b" ").decode(errors="replace")
                found.append((int(entry.name), command))
        return found

    def pid_of(self, fragment: str) -> int:
        """The one process of this home whose command line contains ``fragment``."""
        (pid,) = [pid for pid, command in self.processes() if fragment in command]
        return pid


class Running:
    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.lines: list[str] = []
        assert process.stdout is not None
        stdout = process.stdout
        self.reader = threading.Thread(
            target=lambda: self.lines.extend(iter(stdout.readline, "")), daemon=True
        )
        self.reader.start()

    def printed(self, text: str) -> bool:
        return any(text in line for line in self.lines)

    def wait(self, timeout: float) -> tuple[int, str]:
        """The exit code and everything the command printed."""
        code = self.process.wait(timeout)
        self.reader.join(timeout=5)
        return code, "".join(self.lines)


@contextmanager
def local_home() -> Iterator[LocalHome]:
    path = Path(tempfile.mkdtemp(prefix="krakenfeed-home-"))
    path.chmod(0o755)
    try:
        yield LocalHome(path)
    finally:
        shutil.rmtree(path, ignore_errors=True)
