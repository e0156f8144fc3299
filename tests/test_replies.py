"""Binary replies wait for the store's commit, and keep their order."""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from chatd import binwire
from chatd.store import MemoryStore
from tests.support import Client, Server, command


class HeldStore(MemoryStore):
    """A store whose commits happen when the test says so, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting: list[Deferred[None]] = []

    def settled(self) -> bool:
        # Every change waits for the test to commit it.
        return False

    def committed(self) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self.waiting.append(d)
        return d

    def commit(self) -> None:
        waiting, self.waiting = self.waiting, []
        for d in waiting:
            d.callback(None)

    def fail(self) -> None:
        waiting, self.waiting = self.waiting, []
        for d in waiting:
            d.errback(OSError("database or disk is full"))


def texts(client: Client) -> list[str]:
    return [payload.decode("utf-8") for payload in client.frames()]


class MemoryRepliesTests(SynchronousTestCase):
    def test_answered_at_once(self) -> None:
        """Without a database, every reply is written as its command arrives."""
        client = Server().connect()
        client.send(command(b"register", b"bob"))
        self.assertEqual(texts(client), ["Hello, bob"])
        client.send(command(b"send", b"bob", b"hi"))
        self.assertEqual(texts(client), [binwire.ADDED])


class HeldRepliesTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.store = HeldStore()
        self.client = Server(store=self.store).connect()

    def test_acknowledged_after_commit(self) -> None:
        """C{Message added to storage!} waits for the commit."""
        self.client.send(command(b"register", b"bob"))
        self.client.send(command(b"send", b"bob", b"hi"))
        self.assertEqual(self.client.take(), b"")
        self.store.commit()
        self.assertEqual(texts(self.client), ["Hello, bob", binwire.ADDED])

    def test_pipelined_replies_keep_order(self) -> None:
        """A pipelined send, receive and users are answered in that order."""
        self.client.send(
            command(b"register", b"bob")
            + command(b"send", b"bob", b"hi")
            + command(b"receive")
            + command(b"users")
        )
        self.assertEqual(self.client.take(), b"")
        self.store.commit()
        self.assertEqual(
            texts(self.client),
            ["Hello, bob", binwire.ADDED, "1", "bob", "hi", "1", "bob"],
        )

    def test_refusal_waits_its_turn(self) -> None:
        """A refusal comes after the replies before it; nothing after it is read."""
        self.client.send(
            command(b"register", b"bob") + command(b"bogus") + command(b"users")
        )
        self.assertFalse(self.client.closed)
        self.store.commit()
        self.assertEqual(texts(self.client), ["Hello, bob", binwire.UNKNOWN_COMMAND])
        self.assertTrue(self.client.closed)

    def test_failed_commit(self) -> None:
        """A change that is not committed is not acknowledged: the client is
        told, for each command that waited on it, and may go on."""
        self.client.send(command(b"register", b"bob") + command(b"users"))
        self.store.fail()
        self.assertEqual(texts(self.client), [binwire.STORE_FAILED] * 2)
        self.assertFalse(self.client.closed)
        self.client.send(command(b"users"))
        self.store.commit()
        self.assertEqual(texts(self.client), ["1", "bob"])
