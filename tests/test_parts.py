"""The hub's three in-process parts, each through its interface, the set
C{makeService} gives a server of one process, and the PostgreSQL names in
the orders a node meets a join's answer and its event."""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from chatd import tap
from chatd.cluster import Link, NotifyDelivery, PostgresMailboxes, PostgresNames
from chatd.database import open_database
from chatd.delivery import Delivery, LocalDelivery
from chatd.hub import Hub
from chatd.mailboxes import LocalMailboxes, Mailboxes
from chatd.names import BinaryUser, LineUser, LocalNames, Names
from chatd.rules import Limits, MailboxFull, NameTaken
from chatd.store import MemoryStore, SqliteStore
from tests.support import InlineWorker, temporary_directory


class Recorder:
    """A session that keeps each write it is given."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def deliver(self, data: bytes) -> None:
        self.writes.append(data)


def letters(mail: object) -> list[tuple[str, str]]:
    """Who sent each message of a mailbox taken at once, and what."""
    assert isinstance(mail, list)
    return [(m.sender, m.text) for m in mail]


class NamesTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.hub = Hub()
        self.names: Names = self.hub.namespace

    def test_one_name_across_protocols_and_cases(self) -> None:
        self.names.join_line("Alice", Recorder())
        with self.assertRaises(NameTaken):
            self.names.register("ALICE", "10.0.0.1")
        bob, new = self.names.register("bob", "10.0.0.1")  # type: ignore[misc]
        self.assertTrue(new)
        with self.assertRaises(NameTaken):
            self.names.join_line("Bob", Recorder())

    def test_a_name_given_up_is_free_and_the_list_keeps_arrival_order(self) -> None:
        alice = self.names.join_line("alice", Recorder())
        self.names.register("bob", "10.0.0.1")
        self.names.join_line("carol", Recorder())
        self.names.leave(alice)  # type: ignore[arg-type]
        self.assertEqual(self.names.users_line(), b"!users 2 bob carol\n")
        self.names.join_line("alice", Recorder())
        self.assertEqual(self.names.names(), ["bob", "carol", "alice"])

    def test_binary_name_claimed_back_from_its_host_only(self) -> None:
        first, _ = self.names.register("bob", "10.0.0.1")  # type: ignore[misc]
        again, new = self.names.register("Bob", "10.0.0.1")  # type: ignore[misc]
        self.assertIs(again, first)
        self.assertFalse(new)
        with self.assertRaises(NameTaken):
            self.names.register("bob", "10.0.0.2")


class DeliveryTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.hub = Hub(clock=self.clock)  # type: ignore[arg-type]
        self.delivery: Delivery = self.hub.delivery

    def test_a_turn_is_one_write_a_session(self) -> None:
        alice, bob = Recorder(), Recorder()
        with self.delivery.batch():
            sender = self.hub.join_line("alice", alice)
            self.hub.join_line("bob", bob)
        with self.delivery.batch():
            self.delivery.say_all(sender, "one")  # type: ignore[arg-type]
            self.delivery.say_all(sender, "two")  # type: ignore[arg-type]
        self.assertEqual(alice.writes + bob.writes, [])
        self.clock.advance(0)
        self.assertEqual(alice.writes, [b"!joined bob\n"])
        self.assertEqual(bob.writes, [b"!msg alice one\n!msg alice two\n"])

    def test_a_session_that_leaves_keeps_what_came_before(self) -> None:
        alice, bob = Recorder(), Recorder()
        sender = self.hub.join_line("alice", alice)
        leaving = self.hub.join_line("bob", bob)
        del alice.writes[:], bob.writes[:]
        with self.delivery.batch():
            self.delivery.say_all(sender, "before")  # type: ignore[arg-type]
            self.hub.leave(leaving)  # type: ignore[arg-type]
            self.delivery.say_all(sender, "after")  # type: ignore[arg-type]
        self.clock.advance(0)
        self.assertEqual(bob.writes, [b"!msg alice before\n"])
        self.assertEqual(alice.writes, [b"!left bob\n"])

    def test_a_private_message_reaches_a_line_user_or_a_mailbox(self) -> None:
        bob = Recorder()
        alice = self.hub.join_line("alice", Recorder())
        self.hub.join_line("bob", bob)
        carol, _ = self.hub.register("carol", "10.0.0.1")  # type: ignore[misc]
        self.delivery.say_to(alice, "Bob", "hi")  # type: ignore[arg-type]
        self.delivery.say_to(alice, "CAROL", "hello")  # type: ignore[arg-type]
        self.assertEqual(bob.writes[-1], b"!privmsg alice hi\n")
        self.assertEqual(letters(self.hub.take_mail(carol)), [("alice", "hello")])


class MailboxesTests(SynchronousTestCase):
    def test_a_sender_past_its_share_is_told_once(self) -> None:
        hub = Hub(Limits(mailbox_size=10, mailbox_share=2))
        mailboxes: Mailboxes = hub.mailboxes
        eve, _ = hub.register("eve", "10.0.0.1")  # type: ignore[misc]
        bob, _ = hub.register("bob", "10.0.0.2")  # type: ignore[misc]
        hub.say_all(eve, "1")
        hub.say_all(eve, "2")
        with self.assertRaises(MailboxFull) as told:
            hub.say_all(eve, "3")
        self.assertEqual(told.exception.names, ["bob"])
        # Named once until bob takes his mail.
        hub.say_all(eve, "4")
        self.assertEqual(letters(mailboxes.take_mail(bob)), [("eve", "1"), ("eve", "2")])
        hub.say_all(eve, "5")
        self.assertEqual(mailboxes.census(), (2, 1))

    def test_kept_in_the_store_across_a_restart(self) -> None:
        path = temporary_directory(self) + "/chatd.sqlite"

        clock = Clock()

        def server() -> tuple[Hub, SqliteStore]:
            db = open_database(path)
            store = SqliteStore(db, clock, InlineWorker())  # type: ignore[arg-type]
            return Hub(mailboxes=LocalMailboxes(store)), store

        hub, store = server()
        alice, _ = hub.register("alice", "10.0.0.1")  # type: ignore[misc]
        hub.register("bob", "10.0.0.2")
        hub.say_to(alice, "bob", "kept")
        clock.advance(0)
        self.assertTrue(hub.settled())
        store.stopService()
        hub, store = server()
        self.assertEqual(hub.names(), ["alice", "bob"])
        bob = hub.find("bob")
        assert isinstance(bob, BinaryUser)
        self.assertEqual(letters(hub.take_mail(bob)), [("alice", "kept")])
        store.stopService()


class ServiceTests(SynchronousTestCase):
    def test_one_process_gets_the_in_process_set(self) -> None:
        config = tap.Options()
        config.parseOptions(["--port", "tcp:0", "--no-web"])
        service = tap.makeService(config, MemoryReactorClock())  # type: ignore[arg-type]
        (draining,) = [child for child in service if isinstance(child, tap.Draining)]
        hub = draining.factory.hub
        self.assertIsInstance(hub.namespace, LocalNames)
        self.assertIsInstance(hub.delivery, LocalDelivery)
        self.assertIsInstance(hub.mailboxes, LocalMailboxes)
        self.assertIsInstance(hub.mailboxes.store, MemoryStore)  # type: ignore[attr-defined]


class HeldEngine:
    """An engine whose ops wait until the test gives each its result."""

    def __init__(self) -> None:
        self.ops: list[tuple[object, Deferred[object]]] = []

    def submit(self, op: object) -> Deferred[object]:
        d: Deferred[object] = Deferred()
        self.ops.append((op, d))
        return d


class PostgresNamesTests(SynchronousTestCase):
    """The PostgreSQL set's names, with the engine's answers and the events
    given in the orders a node can meet them in."""

    def setUp(self) -> None:
        self.engine = HeldEngine()
        link = Link(self.engine, "node-1")  # type: ignore[arg-type]
        self.names = PostgresNames(link)
        self.hub = Hub(
            names=self.names,
            delivery=NotifyDelivery(Clock(), link),
            mailboxes=PostgresMailboxes(link),
        )

    def test_own_join_read_from_the_user_list_before_its_claim_came_back(self) -> None:
        # A node just started: the join commits before the node listens, so
        # its event is never heard; the user list it reads on listening has
        # the row before the engine's answer reaches the reactor.
        session = Recorder()
        joined = self.names.join_line("alice", session)
        joined_users: list[object] = []
        joined.addCallback(joined_users.append)
        self.names.snapshot([(7, "alice", "l", "node-1", "")])
        ((_, claimed),) = self.engine.ops
        claimed.callback(7)
        (user,) = joined_users
        self.assertIsInstance(user, LineUser)
        self.assertEqual(self.hub.names(), ["alice"])
        self.assertIs(self.hub.find("alice"), user)

    def test_own_join_heard_before_its_claim_came_back(self) -> None:
        joined_users: list[object] = []
        self.names.join_line("alice", Recorder()).addCallback(joined_users.append)
        ((op, claimed),) = self.engine.ops
        self.hub.delivery.receive([["j", 7, "alice", "l", "node-1", "", op.req]])  # type: ignore[attr-defined]
        claimed.callback(7)
        self.assertEqual([type(u) for u in joined_users], [LineUser])
