"""A real PostgreSQL server for tests and benchmarks, started in a temporary directory.

C{initdb} and C{pg_ctl} build and run a throwaway cluster that listens on
127.0.0.1 on a free port (and on a Unix socket in its own directory, never
the system's). PostgreSQL refuses to run as root, so when this runs as root
the cluster belongs to an unprivileged user (C{nobody}) and every server
program runs as it. Usable from trial, pytest and plain scripts: nothing here
needs a reactor.
"""

from __future__ import annotations

import atexit
import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from typing import Callable

# How long the server may take to start or stop.
PATIENCE = 30


def find_bindir() -> str | None:
    """The directory holding C{initdb} and C{pg_ctl}, or None if there is none."""
    on_path = shutil.which("initdb")
    if on_path is not None:
        bindir = os.path.dirname(os.path.realpath(on_path))
        if os.path.exists(os.path.join(bindir, "pg_ctl")):
            return bindir
    # Debian keeps them out of PATH, one directory per major version.
    for bindir in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if os.path.exists(os.path.join(bindir, "initdb")):
            return bindir
    return None


def unavailable() -> str | None:
    """Why no PostgreSQL can be started here, or None if one can."""
    if find_bindir() is None:
        return "PostgreSQL is not installed (no initdb on PATH or in /usr/lib/postgresql)"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install 'chatd[postgresql]')"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    """One PostgreSQL cluster in a temporary directory; L{stop} and L{start} again at will."""

    _names = itertools.count(1)

    def __init__(self, fsync: bool = False) -> None:
        """
        @param fsync: whether commits reach the disk; tests need no
            durability beyond the process, benchmarks measure it.
        """
        bindir = find_bindir()
        if bindir is None:
            raise RuntimeError(unavailable())
        self.bindir = bindir
        self.fsync = fsync
        self.directory = tempfile.mkdtemp(prefix="chatd-pg-")
        self.data = os.path.join(self.directory, "data")
        self.log = os.path.join(self.directory, "server.log")
        self.port = free_port()
        self.running = False
        self._preexec: Callable[[], None] | None = None
        if os.geteuid() == 0:
            user = pwd.getpwnam("nobody")
            os.chown(self.directory, user.pw_uid, user.pw_gid)
            os.chmod(self.directory, 0o700)
            self._preexec = _become(user.pw_uid, user.pw_gid)
        self._run("initdb", "-D", self.data, "-U", "chatd", "--auth=trust",
                  "--no-sync", "-E", "UTF8", "--locale=C")

    @property
    def uri(self) -> str:
        """The URI of the C{postgres} database, as a chatd node is given."""
        return self.database_uri("postgres")

    def database_uri(self, name: str) -> str:
        return f"postgresql://chatd@127.0.0.1:{self.port}/{name}"

    def start(self) -> None:
        """Start (or start again, on the same port) and wait until it accepts connections."""
        options = (
            f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1"
            f" -c fsync={'on' if self.fsync else 'off'} -c max_connections=200"
        )
        self._run("pg_ctl", "start", "-w", "-t", str(PATIENCE), "-D", self.data,
                  "-l", self.log, "-o", options)
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        """Stop: C{fast} ends every session; C{immediate} is a crash."""
        if self.running:
            self.running = False
            self._run("pg_ctl", "stop", "-w", "-t", str(PATIENCE), "-D", self.data, "-m", mode)

    def restart(self) -> None:
        self.stop()
        self.start()

    def new_database(self) -> str:
        """A new empty database; its URI."""
        import psycopg

        name = f"chatd_{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.uri, autocommit=True) as db:
            db.execute(f"CREATE DATABASE {name}")
        return self.database_uri(name)

    def destroy(self) -> None:
        """Stop, and remove every file."""
        try:
            self.stop("immediate")
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)

    def server_log(self) -> str:
        try:
            with open(self.log) as f:
                return f.read()
        except OSError as e:
            return str(e)

    def _run(self, program: str, *args: str) -> None:
        result = subprocess.run(
            [os.path.join(self.bindir, program), *args],
            preexec_fn=self._preexec,
            cwd=self.directory,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=PATIENCE + 10,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{program} failed ({result.returncode}): "
                f"{result.stderr.decode(errors='replace')}\n{self.server_log()}"
            )


def _become(uid: int, gid: int) -> Callable[[], None]:
    def become() -> None:
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)

    return become


_shared: PostgresServer | None = None


def shared_server() -> PostgresServer:
    """One running server for the whole test process, removed when it exits."""
    global _shared
    if _shared is None:
        server = PostgresServer()
        atexit.register(server.destroy)
        server.start()
        _shared = server
    return _shared


def fresh_database() -> str:
    """The URI of a new empty database on the shared server."""
    return shared_server().new_database()
