"""Where a local run keeps its results: the data directory and its PostgreSQL.

The data directory is ``$XDG_DATA_HOME/krakenfeed`` (``~/.local/share/krakenfeed``
when the variable is unset). Under root, PostgreSQL runs as the ``postgres`` user,
who cannot enter root's home directory, so root's default is
``/var/lib/krakenfeed`` instead; an explicit ``XDG_DATA_HOME`` is always obeyed.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import psycopg
from psycopg import sql

from krakenfeed.embedded import EmbeddedPostgres, free_port
from krakenfeed.embedded.net import port_open
from krakenfeed.embedded.postgres import PG_BIN_ENV, pg_bin_dir

DATABASE: Final = "krakenfeed"
ROOT_DATA_DIR: Final = Path("/var/lib/krakenfeed")


class LocalStoreError(RuntimeError):
    """The local PostgreSQL cannot be used; the message says what to do."""


def data_dir() -> Path:
    xdg = os.environ.get("XDG_DATA_HOME")
    if xdg:
        return Path(xdg) / "krakenfeed"
    if os.geteuid() == 0:
        return ROOT_DATA_DIR
    return Path.home() / ".local" / "share" / "krakenfeed"


def cluster_root(base: Path) -> Path:
    return base / "postgres"


def running_port(base: Path) -> int | None:
    """The port of a server running on this data directory, from its postmaster.pid."""
    pid_file = cluster_root(base) / "data" / "postmaster.pid"
    try:
        lines = pid_file.read_text().splitlines()
    except OSError:
        return None
    if len(lines) < 4 or not lines[3].strip().isdigit():
        return None
    port = int(lines[3])
    return port if port_open(port) else None


def _cluster(base: Path, port: int | None) -> EmbeddedPostgres:
    root = cluster_root(base)
    base.mkdir(parents=True, exist_ok=True)
    try:
        bin_dir = pg_bin_dir()
    except FileNotFoundError as exc:
        raise LocalStoreError(str(exc)) from None
    if not (bin_dir / "initdb").exists():
        raise LocalStoreError(
            f"no PostgreSQL server binaries in {bin_dir}: apt-get install postgresql "
            f"(or point {PG_BIN_ENV} at the directory holding initdb and pg_ctl)"
        )
    server = EmbeddedPostgres(port, root=root)
    if os.geteuid() == 0:
        reachable = subprocess.run(
            ["runuser", "-u", "postgres", "--", "test", "-w", str(root)], check=False
        )
        if reachable.returncode != 0:
            raise LocalStoreError(
                f"PostgreSQL runs as user postgres under root and cannot reach {root}: "
                "set XDG_DATA_HOME to a directory every user may enter, or run as a normal user"
            )
    return server


def _ensure_database(server: EmbeddedPostgres) -> str:
    with psycopg.connect(server.url, autocommit=True) as admin:
        exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,))
        if exists.fetchone() is None:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
    return server.url_for(DATABASE)


def _owner_file(base: Path) -> Path:
    return base / "postgres.owner"


def _owner_alive(base: Path) -> bool:
    """Whether the process that started the running server (and will stop it) lives."""
    try:
        pid = int(_owner_file(base).read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return False
    return True


_START_ATTEMPTS = 3


def _start(base: Path) -> EmbeddedPostgres:
    """Start the cluster on a free port; another one if that was taken meanwhile."""
    server_log = cluster_root(base) / "server.log"
    for _ in range(_START_ATTEMPTS):
        server = _cluster(base, free_port())
        logged = server_log.stat().st_size if server_log.exists() else 0
        try:
            return server.start()
        except subprocess.CalledProcessError as exc:
            news = ""
            if server_log.exists():
                with server_log.open("rb") as log:
                    log.seek(logged)
                    news = log.read().decode(errors="replace")
            if "could not bind" in news or "Address already in use" in news:
                continue
            output = (exc.output or b"").decode(errors="replace").strip().splitlines()
            raise LocalStoreError(
                f"PostgreSQL in {server.data_dir} did not start: "
                f"{output[-1] if output else 'no output'} (see {server_log})"
            ) from None
    raise LocalStoreError(
        f"PostgreSQL found {_START_ATTEMPTS} free ports taken by the time it started"
        f" (the last was {server.port}); see {server_log}"
    )


@contextlib.contextmanager
def local_postgres(base: Path) -> Iterator[str]:
    """The URL of the data directory's PostgreSQL.

    A server that a live process started (a running ``up``) is used as it is, and
    that process stops it. Otherwise this caller owns the server for the duration:
    it starts one, or adopts one whose owner died without stopping it (a killed
    ``up``), and stops it on the way out.
    """
    port = running_port(base)
    if port is not None and _owner_alive(base):
        yield _cluster(base, port).url_for(DATABASE)
        return
    server = _cluster(base, port) if port is not None else _start(base)
    _owner_file(base).write_text(str(os.getpid()))
    try:
        yield _ensure_database(server)
    finally:
        server.stop()
        _owner_file(base).unlink(missing_ok=True)


@contextlib.contextmanager
def results_store(postgres_url: str | None) -> Iterator[str]:
    """``--postgres-url`` when given, else the local data directory's PostgreSQL."""
    if postgres_url:
        yield postgres_url
        return
    with local_postgres(data_dir()) as url:
        yield url
