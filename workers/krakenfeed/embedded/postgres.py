"""PostgreSQL from the machine's binaries, in a throw-away or a kept data directory."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path

from krakenfeed.embedded.net import free_port

PG_BIN_ENV = "KRAKENFEED_PG_BIN"


def pg_bin_dir() -> Path:
    """``$KRAKENFEED_PG_BIN``, the newest Debian install, or the directory of ``initdb`` on PATH."""
    override = os.environ.get(PG_BIN_ENV)
    if override:
        return Path(override)
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda path: int(Path(path).parts[-3]),
    )
    if candidates:
        return Path(candidates[-1]).parent
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    raise FileNotFoundError(
        "no PostgreSQL server binaries found: apt-get install postgresql, "
        f"or set {PG_BIN_ENV} to the directory holding initdb and pg_ctl"
    )


class EmbeddedPostgres:
    """A private cluster on a free loopback port with trust authentication.

    PostgreSQL refuses to run as root, so under root the cluster belongs to the
    ``postgres`` system user and its commands run through ``runuser``.

    With ``root`` the cluster lives in that directory and outlives the server:
    ``initdb`` runs only when it holds no cluster yet, and ``stop`` shuts down
    cleanly and keeps the data. Without it, everything goes into a temporary
    directory that ``stop`` removes.
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        durable: bool = True,
        root: Path | None = None,
        settings: Mapping[str, str] | None = None,
    ) -> None:
        self.port = port or free_port()
        self.durable = durable
        self.settings = dict(settings or {})
        """Further server settings, such as ``track_commit_timestamp=on``."""
        self.kept = root is not None
        self.user = "postgres"
        self._bin = pg_bin_dir()
        if root is None:
            root = Path(tempfile.mkdtemp(prefix="krakenfeed-pg-"))
        else:
            root.mkdir(parents=True, exist_ok=True)
        self._root = root
        self.data_dir = self._root / "data"
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self._root, owner.pw_uid, owner.pw_gid)
            self._as_user = ["runuser", "-u", "postgres", "--"]
        else:
            self.user = pwd.getpwuid(os.geteuid()).pw_name

    @property
    def url(self) -> str:
        return self.url_for("postgres")

    def url_for(self, database: str) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str) -> None:
        subprocess.run(
            [*self._as_user, *args], check=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )

    def start(self) -> EmbeddedPostgres:
        if not (self.data_dir / "PG_VERSION").exists():
            self._run(
                str(self._bin / "initdb"), "-D", str(self.data_dir), "-U", self.user,
                "-A", "trust", "-E", "UTF8", "--no-locale", "--no-sync",
            )  # fmt: skip
        options = f"-c listen_addresses=127.0.0.1 -c unix_socket_directories={self._root}"
        options += " -c max_connections=200"
        if not self.durable:
            # Test and benchmark clusters trade crash safety for speed.
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        options += "".join(f" -c {name}={value}" for name, value in self.settings.items())
        self._run(
            str(self._bin / "pg_ctl"), "-D", str(self.data_dir), "-w", "-t", "30",
            "-o", f"-p {self.port} {options}", "-l", str(self._root / "server.log"), "start",
        )  # fmt: skip
        return self

    def stop(self) -> None:
        # A kept cluster shuts down cleanly (a checkpoint, no recovery on the next
        # start); a throw-away one is about to be deleted anyway.
        mode = "fast" if self.kept else "immediate"
        if self.data_dir.exists():
            subprocess.run(
                [*self._as_user, str(self._bin / "pg_ctl"), "-D", str(self.data_dir),
                 "-m", mode, "-w", "stop"],
                check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
        if not self.kept:
            shutil.rmtree(self._root, ignore_errors=True)

    def __enter__(self) -> EmbeddedPostgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
