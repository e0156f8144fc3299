"""The SQLite store: what a restart keeps, and when a change counts as stored."""

from __future__ import annotations

import os
import sqlite3
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from chatd import binwire
from chatd.database import open_database
from chatd.store import Mail, SqliteStore, ThreadWorker
from tests.support import (
    Client,
    HeldWorker,
    InlineWorker,
    Server,
    command,
    temporary_directory,
)


class StoreTestCase(SynchronousTestCase):
    """A server on a database file, and restarts of it."""

    Worker: type[InlineWorker] = InlineWorker

    def setUp(self) -> None:
        self.path = os.path.join(temporary_directory(self), "chatd.sqlite")
        self.worker = self.Worker()
        self.start()

    def start(self) -> None:
        self.clock = Clock()
        self.db = open_database(self.path)
        self.addCleanup(self.db.close)
        self.store = SqliteStore(self.db, self.clock, self.worker)
        self.server = Server(store=self.store, clock=self.clock)

    def restart(self) -> None:
        """A new server on the same file; the old one is simply gone."""
        self.start()

    def ask(self, client: Client, *parts: bytes) -> list[str]:
        """Send one command, let the reactor turn, and return the reply frames."""
        client.send(command(*parts))
        self.clock.advance(0)
        return [payload.decode("utf-8") for payload in client.frames()]

    def binary(self, name: bytes, host: str = "10.0.0.1") -> Client:
        client = self.server.connect(host=host)
        self.ask(client, b"register", name)
        return client


class RestartTests(StoreTestCase):
    def test_users_and_mail_survive(self) -> None:
        """Users come back registered and offline, their mail oldest first."""
        bob = self.binary(b"bob")
        alice = self.binary(b"alice", host="10.0.0.2")
        self.assertEqual(self.ask(alice, b"send", b"bob", b"one"), [binwire.ADDED])
        self.assertEqual(self.ask(alice, b"sendall", b"two"), [binwire.ADDED])
        self.assertEqual(self.ask(bob, b"sendall", b"hi all"), [binwire.ADDED])
        self.restart()
        bob = self.server.connect(host="10.0.0.1")
        self.assertEqual(self.ask(bob, b"users"), ["2", "bob", "alice"])
        self.assertEqual(self.ask(bob, b"register", b"bob"), ["Nice to see you, bob"])
        self.assertEqual(
            self.ask(bob, b"receive"), ["2", "alice", "one", "alice", "two"]
        )
        alice = self.server.connect(host="10.0.0.2")
        self.assertEqual(self.ask(alice, b"register", b"ALICE"), ["Nice to see you, alice"])
        self.assertEqual(self.ask(alice, b"receive"), ["1", "bob", "hi all"])

    def test_name_stays_taken(self) -> None:
        """After a restart, a kept name is still refused to another host."""
        self.binary(b"bob")
        self.restart()
        other = self.server.connect(host="10.0.0.9")
        self.assertEqual(self.ask(other, b"register", b"Bob"), ["'Bob' already exists!"])

    def test_receive_empties(self) -> None:
        """What C{receive} returned is gone, and only that."""
        bob = self.binary(b"bob")
        self.ask(bob, b"send", b"bob", b"one")
        self.assertEqual(self.ask(bob, b"receive"), ["1", "bob", "one"])
        self.ask(bob, b"send", b"bob", b"two")
        self.restart()
        bob = self.binary(b"bob")
        self.assertEqual(self.ask(bob, b"receive"), ["1", "bob", "two"])
        self.restart()
        bob = self.binary(b"bob")
        self.assertEqual(self.ask(bob, b"receive"), ["0"])

    def test_logout_deletes(self) -> None:
        """C{logout} takes the user and its mail away for good."""
        bob = self.binary(b"bob")
        self.binary(b"alice")
        self.ask(bob, b"send", b"bob", b"one")
        self.assertEqual(self.ask(bob, b"logout"), [binwire.LOGGED_OUT])
        self.restart()
        carol = self.server.connect()
        self.assertEqual(self.ask(carol, b"users"), ["1", "alice"])
        bob = self.server.connect(host="10.0.0.7")
        self.assertEqual(self.ask(bob, b"register", b"bob"), ["Hello, bob"])
        self.assertEqual(self.ask(bob, b"receive"), ["0"])
        self.assertEqual(self.db.execute("SELECT count(*) FROM mail").fetchone(), (0,))

    def test_keys_go_on(self) -> None:
        """Users and mail added after a restart do not overwrite kept ones."""
        bob = self.binary(b"bob")
        self.ask(bob, b"send", b"bob", b"one")
        self.restart()
        alice = self.binary(b"alice")
        self.ask(alice, b"send", b"bob", b"two")
        self.restart()
        self.assertEqual(self.ask(self.server.connect(), b"users"), ["2", "bob", "alice"])
        bob = self.binary(b"bob")
        self.assertEqual(
            self.ask(bob, b"receive"), ["2", "bob", "one", "alice", "two"]
        )

    def test_line_users_are_not_kept(self) -> None:
        """Line users are bound to their connection; their mail to binary users is kept."""
        self.binary(b"bob")
        carol = self.server.connect()
        carol.send(b"!nick carol\n!sendmsg hello\n!sendto bob psst\n!poke bob\n")
        self.clock.advance(0)
        self.restart()
        bob = self.server.connect(host="10.0.0.1")
        self.assertEqual(self.ask(bob, b"users"), ["1", "bob"])
        self.ask(bob, b"register", b"bob")
        self.assertEqual(
            self.ask(bob, b"receive"),
            ["3", "carol", "hello", "carol", "psst", "carol", "!poke carol bob"],
        )


class CommitTests(StoreTestCase):
    Worker = HeldWorker
    worker: HeldWorker

    def test_acknowledged_after_commit(self) -> None:
        """The reply waits until the transaction holding the change is committed."""
        bob = self.server.connect()
        bob.send(command(b"register", b"bob"))
        self.clock.advance(0)
        self.assertEqual(bob.take(), b"")
        self.worker.release()
        self.assertEqual(bob.frames(), [b"Hello, bob"])

    def test_group_commit(self) -> None:
        """Changes made while a commit is under way share the next transaction."""
        clients = [self.server.connect(port=40000 + n) for n in range(10)]
        for n, client in enumerate(clients):
            client.send(command(b"register", b"u%d" % n))
        self.clock.advance(0)
        for client in clients:
            client.send(command(b"sendall", b"hi"))
        self.clock.advance(0)
        self.worker.release()
        self.assertEqual([client.frames() for client in clients],
                         [[b"Hello, u%d" % n] for n in range(10)])
        self.clock.advance(0)
        self.worker.release()
        self.assertEqual([client.frames() for client in clients],
                         [[binwire.ADDED.encode()]] * 10)
        self.assertEqual(self.worker.runs, 2)
        self.assertEqual(self.db.execute("SELECT count(*) FROM mail").fetchone(), (90,))

    def test_put_back_after_a_later_receive(self) -> None:
        """A receive while the failing one commits takes only what came since."""
        bob = self.server.connect(host="10.0.0.1")
        bob2 = self.server.connect(host="10.0.0.1", port=40001)
        bob.send(command(b"register", b"bob") + command(b"send", b"bob", b"one"))
        bob2.send(command(b"register", b"bob"))
        self.clock.advance(0)
        self.worker.release()
        bob.send(command(b"receive"))
        self.clock.advance(0)
        # Under way: the first receive. Next: "two" and a second receive.
        bob2.send(command(b"send", b"bob", b"two") + command(b"receive"))
        self.worker.release(sqlite3.OperationalError("disk I/O error"))
        self.assertEqual(bob.frames()[-1:], [binwire.STORE_FAILED.encode()])
        self.clock.advance(SqliteStore.retry)
        self.worker.release()
        self.assertEqual(
            bob2.frames(),
            [b"Nice to see you, bob", binwire.ADDED.encode(), b"1", b"bob", b"two"],
        )
        self.restart()
        bob = self.binary(b"bob")
        bob.send(command(b"receive"))
        self.clock.advance(0)
        self.worker.release()
        self.assertEqual(bob.frames()[-3:], [b"1", b"bob", b"one"])

    def test_pipelined_replies_keep_order(self) -> None:
        """A client's pipelined commands are answered in order across commits."""
        bob = self.server.connect()
        alice = self.server.connect(port=40001)
        bob.send(command(b"register", b"bob"))
        self.clock.advance(0)
        # Under way: bob's registration. Waiting for the next commit: alice's.
        alice.send(command(b"register", b"alice") + command(b"users"))
        bob.send(command(b"users") + command(b"send", b"alice", b"hi") + command(b"users"))
        self.assertEqual(bob.take() + alice.take(), b"")
        self.worker.release()
        self.assertEqual(bob.frames(), [b"Hello, bob"])
        self.clock.advance(0)
        self.worker.release()
        self.assertEqual(
            bob.frames(),
            [b"2", b"bob", b"alice", binwire.ADDED.encode(), b"2", b"bob", b"alice"],
        )
        self.assertEqual(alice.frames(), [b"Hello, alice", b"2", b"bob", b"alice"])


class FailureTests(StoreTestCase):
    def test_failed_commit_is_told_and_tried_again(self) -> None:
        """A failed commit is no acknowledgement; its changes are tried again."""
        self.worker.failures = 1
        bob = self.server.connect()
        self.assertEqual(self.ask(bob, b"register", b"bob"), [binwire.STORE_FAILED])
        self.assertFalse(bob.closed)
        # No acknowledgement was given; the change is still tried again, and a
        # later acknowledgement stands on it.
        alice = self.server.connect(port=40001)
        alice.send(command(b"register", b"alice"))
        self.clock.advance(0)
        self.assertEqual(alice.take(), b"")
        self.clock.advance(SqliteStore.retry)
        self.assertEqual(alice.frames(), [b"Hello, alice"])
        self.restart()
        self.assertEqual(self.ask(self.server.connect(), b"users"), ["2", "bob", "alice"])

    def test_failed_receive_puts_mail_back(self) -> None:
        """Mail whose removal is not committed was never received: it goes back."""
        bob = self.binary(b"bob")
        self.ask(bob, b"send", b"bob", b"one")
        self.ask(bob, b"send", b"bob", b"two")
        self.worker.failures = 1
        self.assertEqual(self.ask(bob, b"receive"), [binwire.STORE_FAILED])
        bob = self.binary(b"bob")
        self.ask(bob, b"send", b"bob", b"three")
        self.clock.advance(SqliteStore.retry)
        self.restart()
        bob = self.binary(b"bob")
        self.assertEqual(
            self.ask(bob, b"receive"),
            ["3", "bob", "one", "bob", "two", "bob", "three"],
        )

    def test_stop_commits_what_is_pending(self) -> None:
        """Stopping the service commits first, then closes the database."""
        self.store.startService()
        bob = self.server.connect()
        bob.send(command(b"register", b"bob"))
        d = self.store.stopService()
        self.clock.advance(0)
        self.successResultOf(d)
        self.assertRaises(sqlite3.ProgrammingError, self.db.execute, "SELECT 1")
        self.restart()
        self.assertEqual(self.ask(self.server.connect(), b"users"), ["1", "bob"])


class ThreadWorkerTests(TestCase):
    """The real thing: SQLite in its own thread, under the real reactor."""

    def test_commit_and_stop(self) -> None:
        return Deferred.fromCoroutine(self._commit_and_stop())

    async def _commit_and_stop(self) -> None:
        path = os.path.join(temporary_directory(self), "chatd.sqlite")
        store = SqliteStore(open_database(path), reactor, ThreadWorker(reactor))
        store.startService()
        key = store.add_user("bob", "10.0.0.1")
        store.add_mail(key, "alice", "one")
        await store.committed()
        store.add_mail(key, "alice", "two")
        await store.stopService()
        db = open_database(path)
        self.addCleanup(db.close)
        kept = SqliteStore(db, reactor, ThreadWorker(reactor)).load()
        self.assertEqual(
            [(user.name, user.mail) for user in kept],
            [("bob", [Mail(1, "alice", "one"), Mail(2, "alice", "two")])],
        )
