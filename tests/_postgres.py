"""A real PostgreSQL server for tests: one throwaway cluster per test session, and fixtures.

A pytest plugin (``pytest_plugins`` in ``tests/conftest.py``; a ``tests/collector/
conftest.py`` would take the module name ``conftest`` from the root one, which test modules
import helpers from): ``postgres_server`` (session scope, started on first use, so a run
that never touches PostgreSQL never starts it) and ``postgres_url`` (a fresh, empty
database per test). The suite runs serially; nothing here assumes xdist.

The Debian ``postgresql`` package's binaries (``/usr/lib/postgresql/<major>/bin``, or
``pg_config --bindir``) run a private cluster in a temporary directory: loopback only, on a
free port, its unix socket inside that directory, scram password authentication over TCP
(so every test exercises a URL with a password) and trust over the socket (the fixture's
own administration). ``initdb`` refuses to run as root: as root the directory belongs to
the ``postgres`` user and every server binary runs through ``runuser -u postgres --``.

:meth:`PostgresServer.create_database` gives each test a fresh, empty database (``CREATE
DATABASE ... TEMPLATE template0``, a few tens of milliseconds; measured against a schema
per test, which would need the store to take a search path, for no gain worth it).
"""

from __future__ import annotations

import itertools
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

__all__ = [
    "PostgresServer",
    "PostgresUnavailable",
    "find_bindir",
    "postgres_db",
    "postgres_server",
    "postgres_url",
]

USER = "telemetry"
INSTALL_HINT = (
    "PostgreSQL server binaries (initdb, pg_ctl) not found: install them with"
    " `apt-get install postgresql` (Debian/Ubuntu), or put them on PATH"
)


class PostgresUnavailable(RuntimeError):
    """The server binaries are missing or the server did not start (the message says why)."""


def find_bindir() -> Path:
    """Where ``initdb`` and ``pg_ctl`` are: the newest ``/usr/lib/postgresql/*/bin``, then
    ``pg_config --bindir``, then ``PATH``."""
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run(
            [pg_config, "--bindir"], capture_output=True, text=True, check=False
        ).stdout.strip()
        if out:
            candidates.append(Path(out))
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).parent)
    for bindir in candidates:
        if (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file():
            return bindir
    raise PostgresUnavailable(INSTALL_HINT)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    """A private cluster: :meth:`start`, :meth:`create_database`, :meth:`stop`, :meth:`destroy`."""

    def __init__(self) -> None:
        self.bindir = find_bindir()
        self.as_root = os.geteuid() == 0
        if self.as_root:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                raise PostgresUnavailable(
                    "running as root, initdb needs the `postgres` user (created by"
                    " `apt-get install postgresql`)"
                ) from None
        self.password = "pw-" + secrets.token_urlsafe(18)
        self.user = USER
        self.host = "127.0.0.1"
        self.port = _free_port()
        self.root = Path(tempfile.mkdtemp(prefix="telemetry-pg-"))
        self.data = self.root / "data"
        self.sockets = self.root / "sock"
        self.log = self.root / "server.log"
        self._names = itertools.count(1)
        self.running = False
        self._init_cluster()

    # -- running the server binaries --------------------------------------------------------

    def _run(self, *args: str) -> None:
        argv = [str(self.bindir / args[0]), *args[1:]]
        if self.as_root:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
            raise PostgresUnavailable(
                f"{args[0]} failed ({done.returncode}): {done.stderr.strip()}\n{log}"
            )

    def _init_cluster(self) -> None:
        self.sockets.mkdir()
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self.as_root:
            shutil.chown(self.root, "postgres", "postgres")
            for path in (self.sockets, pwfile):
                shutil.chown(path, "postgres", "postgres")
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            self.user,
            f"--pwfile={pwfile}",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C",
            "--no-instructions",
            "--no-sync",  # a throwaway cluster: no need to fsync its template files
        )
        pwfile.unlink()
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"\nlisten_addresses = '{self.host}'\nport = {self.port}\n"
                f"unix_socket_directories = '{self.sockets}'\n"
                "max_connections = 200\nshared_buffers = 64MB\n"
                "log_min_messages = warning\n"
            )

    def start(self) -> None:
        """Start (or restart after :meth:`stop`) and wait until it accepts connections."""
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start")
        self.running = True

    def stop(self) -> None:
        """Fast shutdown: running transactions abort, clients are disconnected."""
        if self.running:
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
            self.running = False

    def destroy(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    # -- databases ---------------------------------------------------------------------------

    def admin(self, dbname: str = "postgres") -> Any:
        """A superuser ``psycopg.Connection`` over the unix socket (trust), autocommit."""
        import psycopg  # the collector extra: imported only by tests that use the server

        return psycopg.connect(
            host=str(self.sockets),
            port=self.port,
            user=self.user,
            dbname=dbname,
            autocommit=True,
        )

    def url(self, dbname: str, *, password: str | None = None) -> str:
        pw = quote(self.password if password is None else password, safe="")
        return f"postgresql://{self.user}:{pw}@{self.host}:{self.port}/{dbname}"

    def create_database(self) -> str:
        """A fresh, empty database; returns its name."""
        name = f"db_{next(self._names)}"
        with self.admin() as conn:
            conn.execute(f"CREATE DATABASE {name} TEMPLATE template0")
        return name

    def drop_database(self, name: str) -> None:
        """Drop it, disconnecting whoever is still connected (a test's leftover pool)."""
        if self.running:
            with self.admin() as conn:
                conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


# -- fixtures ----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """The session's PostgreSQL server (fails with an install hint when it is missing)."""
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.destroy()


@pytest.fixture
def postgres_db(postgres_server: PostgresServer) -> Iterator[str]:
    """The name of a fresh, empty database, dropped after the test."""
    if not postgres_server.running:  # a test stopped it and failed before restarting
        postgres_server.start()
    name = postgres_server.create_database()
    yield name
    if not postgres_server.running:
        postgres_server.start()
    postgres_server.drop_database(name)


@pytest.fixture
def postgres_url(postgres_server: PostgresServer, postgres_db: str) -> str:
    """``postgresql://telemetry:PASSWORD@127.0.0.1:PORT/db_N`` for a fresh, empty database."""
    return postgres_server.url(postgres_db)
