"""Opening chatd's database: created atomically, refused with a clear reason."""

from __future__ import annotations

import os
import sqlite3
from contextlib import closing, contextmanager
from typing import Iterator

from twisted.internet.task import Clock
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase

from chatd.database import (
    SCHEMA_VERSION,
    UnusableDatabase,
    create_schema,
    open_database,
    schema_version,
)
from chatd.store import KeptUser, Mail, SqliteStore
from chatd.tap import Options, makeService
from tests.support import InlineWorker, temporary_directory

NOBODY = 65534


@contextmanager
def unprivileged() -> Iterator[None]:
    """Run the block as a user that file permissions apply to: root ignores them."""
    if os.geteuid() != 0:
        yield
        return
    os.seteuid(NOBODY)
    try:
        yield
    finally:
        os.seteuid(0)


class OpenTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = temporary_directory(self)
        self.path = os.path.join(self.directory, "chatd.sqlite")

    def refused(self, path: str, timeout: float = 5.0) -> str:
        """Open C{path}, expecting a refusal, and return its text."""
        return str(self.assertRaises(UnusableDatabase, open_database, path, timeout))

    def test_created(self) -> None:
        """A new file gets the current schema, in WAL mode, synced at every commit."""
        with closing(open_database(self.path)) as db:
            self.assertEqual(schema_version(db), SCHEMA_VERSION)
            self.assertEqual(db.execute("PRAGMA journal_mode").fetchone(), ("wal",))
            # 2 is FULL.
            self.assertEqual(db.execute("PRAGMA synchronous").fetchone(), (2,))
        leftovers = [name for name in os.listdir(self.directory) if ".new" in name]
        self.assertEqual(leftovers, [])
        with closing(open_database(self.path)) as db:
            self.assertEqual(schema_version(db), SCHEMA_VERSION)

    def test_empty_file(self) -> None:
        """An empty file, as made to bind-mount into a container, becomes the database."""
        open(self.path, "wb").close()
        with closing(open_database(self.path)) as db:
            self.assertEqual(schema_version(db), SCHEMA_VERSION)
            self.assertEqual(db.execute("PRAGMA journal_mode").fetchone(), ("wal",))

    def test_memory(self) -> None:
        with closing(open_database(":memory:")) as db:
            self.assertEqual(schema_version(db), SCHEMA_VERSION)

    def test_missing_directory(self) -> None:
        path = os.path.join(self.directory, "nowhere", "chatd.sqlite")
        self.assertIn("no directory", self.refused(path))
        self.assertFalse(os.path.exists(path))

    def test_a_directory(self) -> None:
        self.assertIn("cannot", self.refused(self.directory))

    def test_corrupt(self) -> None:
        with open(self.path, "wb") as f:
            f.write(b"this is no database, just some bytes that fill a page " * 100)
        self.assertIn("file is not a database", self.refused(self.path))

    def test_damaged(self) -> None:
        """A database whose pages are damaged is refused, not half read."""
        with closing(open_database(self.path)) as db:
            db.execute("PRAGMA journal_mode = DELETE")
            db.execute("BEGIN")
            db.executemany(
                "INSERT INTO users (id, name, host) VALUES (?, ?, ?)",
                [(n, f"u{n}", "h" * 200) for n in range(1, 200)],
            )
            db.execute("COMMIT")
        with open(self.path, "r+b") as f:
            f.seek(3 * 4096)
            f.write(b"\xff" * 4096)
        self.assertIn("is damaged", self.refused(self.path))

    def test_someone_elses_database(self) -> None:
        with closing(sqlite3.connect(self.path)) as db:
            db.execute("CREATE TABLE other (x)")
        self.assertIn("is not a chatd database", self.refused(self.path))

    def test_newer(self) -> None:
        with closing(open_database(self.path)) as db:
            db.execute("UPDATE version SET version = ?", (SCHEMA_VERSION + 1,))
        self.assertIn("knows versions up to", self.refused(self.path))

    def test_read_only(self) -> None:
        """A file chatd may read but not write is refused at start."""
        open_database(self.path).close()
        os.chmod(self.path, 0o444)
        os.chmod(self.directory, 0o555)
        self.addCleanup(os.chmod, self.directory, 0o700)
        with unprivileged():
            reason = self.refused(self.path)
        self.assertIn("readonly", reason)

    def test_locked(self) -> None:
        """A database another process is writing is refused once the wait is over."""
        open_database(self.path).close()
        with closing(sqlite3.connect(self.path, isolation_level=None)) as other:
            other.execute("BEGIN IMMEDIATE")
            self.assertIn("locked", self.refused(self.path, timeout=0.1))


class UpgradeTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = temporary_directory(self)
        self.path = os.path.join(self.directory, "chatd.sqlite")
        with closing(sqlite3.connect(self.path, isolation_level=None)) as db:
            create_schema(db, 1)
            db.executescript(
                """
                INSERT INTO users (id, name, host) VALUES (1, 'bob', '10.0.0.1');
                INSERT INTO users (id, name, host) VALUES (2, 'alice', '10.0.0.2');
                INSERT INTO mail (id, receiver, sender, text) VALUES (1, 1, 'alice', 'one');
                INSERT INTO mail (id, receiver, sender, text) VALUES (2, 2, 'carol', 'x');
                INSERT INTO mail (id, receiver, sender, text) VALUES (3, 1, 'alice', 'two');
                """
            )

    def test_version_1(self) -> None:
        """A version 1 database is upgraded in place, its users and mail kept."""
        with closing(open_database(self.path)) as db:
            self.assertEqual(schema_version(db), SCHEMA_VERSION)
            kept = SqliteStore(db, Clock(), InlineWorker()).load()
        self.assertEqual(
            kept,
            [
                KeptUser(1, "bob", "10.0.0.1", [Mail(1, "alice", "one"), Mail(3, "alice", "two")]),
                KeptUser(2, "alice", "10.0.0.2", [Mail(2, "carol", "x")]),
            ],
        )

    def test_indexed(self) -> None:
        """The upgrade's index is there, and used to find a mailbox."""
        with closing(open_database(self.path)) as db:
            plan = db.execute(
                "EXPLAIN QUERY PLAN DELETE FROM mail WHERE receiver = 1"
            ).fetchall()
        self.assertIn("mail_by_receiver", str(plan))

    def test_backup(self) -> None:
        """The database as it was is kept beside it before the upgrade."""
        open_database(self.path).close()
        with closing(sqlite3.connect(f"{self.path}-backup-v1")) as backup:
            self.assertEqual(schema_version(backup), 1)
            self.assertEqual(backup.execute("SELECT count(*) FROM mail").fetchone(), (3,))


class TapTests(SynchronousTestCase):
    def options(self, *args: str) -> Options:
        config = Options()
        config.parseOptions(["--port", "tcp:0:interface=127.0.0.1", *args])
        return config

    def test_default_in_memory(self) -> None:
        self.assertIsNone(self.options()["database"])

    def test_empty_name(self) -> None:
        self.assertRaises(UsageError, self.options, "--database", "")

    def test_unusable_database_ends_start(self) -> None:
        """twistd prints a SystemExit's text and exits: one readable line."""
        path = os.path.join(temporary_directory(self), "nowhere", "chatd.sqlite")
        e = self.assertRaises(SystemExit, makeService, self.options("--database", path))
        self.assertEqual(
            str(e.code),
            f"chatd: cannot create database {path}: no directory {os.path.dirname(path)}",
        )
