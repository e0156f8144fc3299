"""The SQLite file behind C{--database}: opened, created and upgraded by chatd.

Much as magic-wormhole-mailbox-server does it: versioned schema files, the
first version in C{schema/v1.sql} and each later one as a step,
C{schema/upgrade-to-vN.sql}. A new database is built by the same steps as an
old one is upgraded, so the two cannot differ; it is built under a temporary
name and renamed into place, so a failed start leaves nothing half made. An
old database is backed up before it is upgraded. C{":memory:"} gives a fresh
database for tests.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from contextlib import closing
from importlib.resources import files

from twisted.logger import Logger

SCHEMA_VERSION = 2

log = Logger()


class UnusableDatabase(Exception):
    """The database cannot be used; the text says why, for a person to read."""


def open_database(path: str, timeout: float = 5.0) -> sqlite3.Connection:
    """Open chatd's database at C{path}, creating or upgrading it as needed.

    The result is in WAL mode with C{synchronous=FULL}, and has just been
    written to, so a database chatd cannot write is refused here, at start.

    @param timeout: seconds to wait for another process's lock.
    @raise UnusableDatabase: the database cannot be opened, read or written.
    """
    try:
        if path == ":memory:" or _empty(path):
            # Nothing to lose: build the schema in place.
            db = _connect(path, timeout)
            create_schema(db)
        elif os.path.exists(path):
            db = _connect(path, timeout)
        else:
            db = _create(path, timeout)
    except (OSError, sqlite3.Error) as e:
        raise UnusableDatabase(f"cannot create or open database {path}: {_reason(e)}") from e
    try:
        _upgrade(db, path)
        _check(db, path)
    except BaseException:
        db.close()
        raise
    return db


def create_schema(db: sqlite3.Connection, version: int = SCHEMA_VERSION) -> None:
    """Build schema C{version} in an empty database: version 1, then each step."""
    _run_script(db, "v1.sql", 1)
    _steps(db, 1, version)


def schema_version(db: sqlite3.Connection) -> int:
    (version,) = db.execute("SELECT version FROM version").fetchone()
    return int(version)


def _connect(path: str, timeout: float) -> sqlite3.Connection:
    # Opened here, then used by the store's single worker thread alone.
    db = sqlite3.connect(
        path, timeout=timeout, isolation_level=None, check_same_thread=False
    )
    # FULL: in WAL mode, NORMAL syncs the log only at checkpoints, so a
    # commit may be rolled back by a power cut; FULL syncs it at every commit.
    db.execute("PRAGMA synchronous = FULL")
    db.execute("PRAGMA foreign_keys = ON")
    return db


def _create(path: str, timeout: float) -> sqlite3.Connection:
    """Build a new database beside C{path} and rename it into place."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise UnusableDatabase(f"cannot create database {path}: no directory {directory}")
    fd, temporary = tempfile.mkstemp(
        prefix=os.path.basename(path) + ".", suffix=".new", dir=directory
    )
    os.close(fd)
    try:
        with closing(_connect(temporary, timeout)) as db:
            db.execute("PRAGMA journal_mode = WAL")
            create_schema(db)
        os.rename(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
    # The new name must survive a power cut too.
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    log.info("created database {path}, schema version {version}", path=path, version=SCHEMA_VERSION)
    return _connect(path, timeout)


def _upgrade(db: sqlite3.Connection, path: str) -> None:
    try:
        version = schema_version(db)
    except sqlite3.Error as e:
        raise UnusableDatabase(f"{path} is not a chatd database: {_reason(e)}") from e
    if version > SCHEMA_VERSION:
        raise UnusableDatabase(
            f"{path} has schema version {version}; this chatd knows versions up to "
            f"{SCHEMA_VERSION}"
        )
    if version == SCHEMA_VERSION:
        return
    try:
        if path != ":memory:":
            backup = f"{path}-backup-v{version}"
            with closing(sqlite3.connect(backup)) as copy:
                db.backup(copy)
            log.info("kept a copy of {path} as {backup}", path=path, backup=backup)
        _steps(db, version, SCHEMA_VERSION)
    except (OSError, sqlite3.Error) as e:
        raise UnusableDatabase(
            f"cannot upgrade {path} from schema version {version}: {_reason(e)}"
        ) from e
    log.info("upgraded {path} to schema version {version}", path=path, version=SCHEMA_VERSION)


def _check(db: sqlite3.Connection, path: str) -> None:
    """Read the structure of every page, and write once: refuse what would fail later."""
    try:
        problems = [row[0] for row in db.execute("PRAGMA quick_check")]
    except sqlite3.Error as e:
        problems = [_reason(e)]
    if problems != ["ok"]:
        raise UnusableDatabase(f"{path} is damaged: {'; '.join(problems[:3])}")
    try:
        if path != ":memory:" and db.execute("PRAGMA journal_mode = WAL").fetchone() != ("wal",):
            raise UnusableDatabase(f"cannot use database {path}: it refuses WAL mode")
        db.execute("BEGIN IMMEDIATE")
        db.execute("UPDATE version SET version = version")
        db.execute("COMMIT")
    except sqlite3.Error as e:
        raise UnusableDatabase(f"cannot write database {path}: {_reason(e)}") from e


def _steps(db: sqlite3.Connection, version: int, target: int) -> None:
    for step in range(version + 1, target + 1):
        _run_script(db, f"upgrade-to-v{step}.sql", step)


def _run_script(db: sqlite3.Connection, name: str, version: int) -> None:
    """Run one schema file and record its version, all in one transaction."""
    script = (files("chatd") / "schema" / name).read_text("utf-8")
    try:
        db.executescript(
            f"BEGIN IMMEDIATE;\n{script}\n"
            f"DELETE FROM version;\nINSERT INTO version (version) VALUES ({version:d});\n"
            "COMMIT;"
        )
    except BaseException:
        if db.in_transaction:
            db.rollback()
        raise


def _empty(path: str) -> bool:
    """Whether C{path} is an empty file, as one made to bind-mount into a container."""
    return os.path.isfile(path) and os.path.getsize(path) == 0


def _reason(e: Exception) -> str:
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e)
