"""PROTOCOL.md section 5, deterministically: StringTransports and a Clock."""

from __future__ import annotations

from typing import Any

from twisted.application.service import MultiService
from twisted.logger import globalLogPublisher
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from chatd import binwire
from chatd.tap import Draining, Options, makeService
from tests.test_replies import HeldStore
from tests.support import Client, Server, command


def register(server: Server, name: bytes, host: str = "127.0.0.1", port: int = 1) -> Client:
    client = server.connect(host, port)
    client.send(command(b"register", name))
    assert client.frames() == [b"Hello, " + name], name
    return client


def nick(server: Server, name: str, host: str = "127.0.0.1", port: int = 2) -> Client:
    client = server.connect(host, port)
    client.send(f"!nick {name}\n".encode())
    assert client.lines()[0].startswith("!users"), name
    return client


def aborted(client: Client) -> bool:
    return bool(client.transport.disconnected)


class Events:
    """Every log event emitted while a test runs."""

    def __init__(self, case: SynchronousTestCase) -> None:
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        case.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def formats(self) -> list[str]:
        return [e.get("log_format") or "" for e in self.events]


class ConnectionLimitTests(SynchronousTestCase):
    def test_total(self) -> None:
        server = Server(max_connections=2)
        nick(server, "a", port=1)
        register(server, b"b", port=2)
        late = server.connect(port=3)
        late.send(b"!nick c\n")
        self.assertEqual(late.lines(), ["!error server-full the server is full; try again later"])
        self.assertTrue(late.closed)
        self.assertEqual(server.hub.names(), ["a", "b"])

    def test_binary_told_in_a_frame(self) -> None:
        server = Server(max_connections=1)
        nick(server, "a")
        late = server.connect(port=3)
        late.send(command(b"register", b"b"))
        self.assertEqual(late.frames(), [b"Server is full!"])
        self.assertTrue(late.closed)

    def test_silent_told_in_line_form_after_grace(self) -> None:
        server = Server(max_connections=1, close_grace=1.0)
        nick(server, "a")
        late = server.connect(port=3)
        server.clock.advance(0.9)
        self.assertEqual(late.take(), b"")
        server.clock.advance(0.1)
        self.assertEqual(late.lines(), ["!error server-full the server is full; try again later"])
        server.clock.advance(1.0)
        self.assertTrue(aborted(late))

    def test_per_host(self) -> None:
        server = Server(max_connections_per_host=2)
        nick(server, "a", port=1)
        nick(server, "b", port=2)
        late = server.connect(port=3)
        late.send(b"!nick c\n")
        self.assertEqual(late.lines()[0].split()[:2], ["!error", "server-full"])
        nick(server, "c", host="10.0.0.9")

    def test_closing_frees_a_place(self) -> None:
        server = Server(max_connections=1)
        first = nick(server, "a")
        first.close()
        nick(server, "b")
        self.assertEqual(server.factory.connections.__len__(), 1)

    def test_turned_away_waiting_is_bounded(self) -> None:
        """Past as many waiting as served, the turned-away are told at once."""
        server = Server(max_connections=1)
        nick(server, "a", port=1)
        waiting = server.connect(port=2)
        self.assertEqual(waiting.take(), b"")
        storm = server.connect(port=3)
        self.assertEqual(storm.lines()[0].split()[:2], ["!error", "server-full"])
        self.assertTrue(storm.closed)


class TimeoutTests(SynchronousTestCase):
    def test_line_handshake(self) -> None:
        server = Server(handshake_timeout=5.0, close_grace=1.0)
        client = server.connect()
        client.send(b"!help\n")
        client.take()
        server.clock.advance(4.9)
        client.send(b"!help\n")
        client.take()
        # Activity does not stretch the handshake.
        server.clock.advance(0.1)
        self.assertEqual(client.lines(), ["!error timeout no !nick in time"])
        self.assertTrue(client.closed)
        server.clock.advance(1.0)
        self.assertTrue(aborted(client))

    def test_silent_connection_told_in_line_form(self) -> None:
        server = Server(handshake_timeout=5.0)
        client = server.connect()
        server.clock.advance(5.0)
        self.assertEqual(client.lines(), ["!error timeout no !nick in time"])

    def test_line_user_may_read_quietly(self) -> None:
        server = Server(handshake_timeout=5.0, idle_timeout=5.0)
        client = nick(server, "a")
        server.clock.advance(3600)
        self.assertFalse(client.closed)
        self.assertEqual(server.clock.getDelayedCalls(), [])

    def test_pychat_nick_flushed_by_the_clock_ends_the_handshake(self) -> None:
        """PyChat's client sends !nick without a line end: the clock parses it."""
        server = Server(handshake_timeout=5.0)
        client = server.connect()
        client.send(b"!nick bob")
        server.clock.advance(0.3)
        self.assertEqual(client.lines(), ["!users 1 bob"])
        server.clock.advance(3600)
        self.assertFalse(client.closed)
        self.assertEqual(server.hub.names(), ["bob"])

    def test_register_held_by_the_flood_limit_ends_the_handshake(self) -> None:
        """A register parsed after its read, once fake lag lets it through, counts."""
        server = Server(handshake_timeout=5.0, idle_timeout=60.0, command_rate=1.0, command_burst=2)
        client = server.connect()
        client.send(command(b"users") * 2 + command(b"register", b"bob"))
        server.clock.advance(1.0)
        self.assertEqual(client.frames()[-1], b"Hello, bob")
        server.clock.advance(30.0)
        self.assertFalse(client.closed)
        # From there on the idle limit applies.
        server.clock.advance(60.0)
        self.assertTrue(client.closed)

    def test_binary_handshake_is_silent(self) -> None:
        server = Server(handshake_timeout=5.0)
        client = server.connect()
        client.send(command(b"users"))
        client.take()
        server.clock.advance(5.0)
        self.assertEqual(client.take(), b"")
        self.assertTrue(client.closed)

    def test_binary_idle(self) -> None:
        server = Server(handshake_timeout=5.0, idle_timeout=10.0)
        client = register(server, b"bob")
        server.clock.advance(9.0)
        client.send(command(b"users"))
        server.clock.advance(9.0)
        self.assertFalse(client.closed)
        server.clock.advance(1.0)
        self.assertTrue(client.closed)
        # Going offline is not logging out.
        self.assertEqual(server.hub.names(), ["bob"])

    def test_binary_not_idle_while_its_commands_are_held(self) -> None:
        """Commands the flood limit holds are the client's own: until they
        have run, it is waiting for answers, not idle."""
        server = Server(idle_timeout=3.0, command_rate=1.0, command_burst=1)
        client = server.connect()
        client.send(command(b"register", b"a"))
        client.take()
        client.send(command(b"users") * 10)
        # About one a second, the last at 10.7 s: long past the idle limit
        # counted from the read, and the client is answered all the same.
        for _ in range(110):
            server.clock.advance(0.1)
        self.assertEqual(client.frames(), [b"1", b"a"] * 10)
        # The limit counts again from the last answer.
        server.clock.advance(2.5)
        self.assertFalse(client.closed)
        server.clock.advance(0.6)
        self.assertTrue(client.closed)

    def test_held_command_runs_before_idle_close_when_the_reactor_is_late(self) -> None:
        """Timers run in the order they were due, even when the reactor gets
        to them late: a command held until 3.5 is answered before the idle
        limit (last read 2.5 + 3 = 5.5) is looked at, at 6.5; and as it was
        answered then, the limit counts from then."""
        server = Server(idle_timeout=3.0, command_rate=1.0, command_burst=1)
        client = server.connect()
        client.send(command(b"register", b"a"))
        self.assertEqual(client.frames(), [b"Hello, a"])
        server.clock.advance(2.5)
        client.send(command(b"users") + command(b"users"))
        self.assertEqual(client.frames(), [b"1", b"a"])
        server.clock.advance(4.0)
        self.assertEqual(client.frames(), [b"1", b"a"])
        self.assertFalse(client.closed)
        server.clock.advance(2.9)
        self.assertFalse(client.closed)
        server.clock.advance(0.1)
        self.assertTrue(client.closed)


class FloodTests(SynchronousTestCase):
    def test_burst_then_rate(self) -> None:
        server = Server(command_rate=2.0, command_burst=3)
        client = nick(server, "a")  # one of the burst
        client.send(b"!users\n" * 5)
        self.assertEqual(len(client.lines()), 2)
        for _ in range(3):
            server.clock.advance(0.49)
            self.assertEqual(client.lines(), [])
            server.clock.advance(0.01)
            self.assertEqual(client.lines(), ["!users 1 a"])
        server.clock.advance(10)
        self.assertEqual(server.clock.getDelayedCalls(), [])

    def test_others_not_delayed(self) -> None:
        server = Server(command_rate=1.0, command_burst=2)
        flooder = nick(server, "a", port=1)
        flooder.send(b"!sendmsg x\n" * 20)
        other = nick(server, "b", port=2)
        other.send(b"!users\n")
        self.assertEqual(other.lines(), ["!users 2 a b"])

    def test_nothing_lost_in_order(self) -> None:
        server = Server(command_rate=10.0, command_burst=2)
        sender = nick(server, "a", port=1)
        reader = nick(server, "b", port=2)
        sender.take()
        reader.take()
        sender.send(b"".join(b"!sendmsg m%d\n" % i for i in range(30)))
        server.clock.pump([0.1] * 40)
        self.assertEqual(reader.lines(), [f"!msg a m{i}" for i in range(30)])

    def test_unterminated_commands_keep_their_boundaries(self) -> None:
        """PyChat's client sends commands without line ends, one per send()."""
        server = Server(command_rate=10.0, command_burst=2)
        reader = nick(server, "b", port=2)
        sender = server.connect(port=1)
        sender.send(b"!nick a")
        server.clock.advance(0.3)
        reader.take()
        for i in range(5):
            sender.send(b"!sendmsg m%d" % i)
        server.clock.pump([0.1] * 10)
        self.assertEqual(reader.lines(), [f"!msg a m{i}" for i in range(5)])

    def test_line_flood_ends(self) -> None:
        server = Server(command_rate=1.0, command_burst=1, max_input_backlog=4096)
        client = nick(server, "a")
        client.send(b"!users\n" * 100)
        client.take()
        client.send(b"!users\n" * 500)
        self.assertEqual(client.lines(), ["!error flood too many commands; slow down"])
        self.assertTrue(client.closed)

    def test_binary_flood_ends(self) -> None:
        server = Server(command_rate=1.0, command_burst=1, max_input_backlog=4096)
        client = register(server, b"bob")
        client.send(command(b"users") * 1000)
        self.assertEqual(client.frames()[-1], binwire.FLOOD.encode())
        self.assertTrue(client.closed)

    def test_nothing_parsed_after_a_refusal(self) -> None:
        """A flooder's read can hold thousands of frames: after a refusal, none is parsed."""
        server = Server()
        client = server.connect()
        client.send(command(b"register", b"a"))
        inner = client.protocol.inner
        ran: list[str] = []
        original = inner._run
        inner._run = lambda cmd, args: (ran.append(cmd.handler), original(cmd, args))[1]
        client.send(command(b"users") + command(b"bogus") + command(b"users") * 1000)
        self.assertEqual(ran, ["on_users"])
        self.assertEqual(client.frames()[-1], b"Unknown command!")
        self.assertTrue(client.closed)

    def test_refusal_waiting_on_a_commit_reads_no_more(self) -> None:
        """While a refusal waits for the store, nothing more is kept or parsed."""
        store = HeldStore()
        server = Server(store=store, command_rate=1.0, command_burst=2)
        client = server.connect()
        client.send(command(b"register", b"bob"))
        # The second command spends the burst and is refused (an empty text).
        client.send(command(b"sendall", b"") + command(b"users") * 1000)
        inner = client.protocol.inner
        held = len(inner._unprocessed)
        client.send(command(b"users") * 10_000)
        self.assertEqual(len(inner._unprocessed), held)
        # Nor does the flood limit let the held frames through later.
        self.assertIsNone(inner.lag._resume)
        store.commit()
        self.assertEqual(client.frames(), [b"Hello, bob", b"Bad message!"])
        self.assertTrue(client.closed)

    def test_binary_commands_delayed(self) -> None:
        server = Server(command_rate=1.0, command_burst=2)
        client = register(server, b"bob")
        client.send(command(b"receive") * 3)
        self.assertEqual(client.frames(), [b"0"])
        server.clock.advance(1.0)
        self.assertEqual(client.frames(), [b"0"])


class SlowReaderTests(SynchronousTestCase):
    def test_backlog_over_bound_aborts(self) -> None:
        events = Events(self)
        server = Server(max_output_backlog=1000, command_burst=100)
        slow = nick(server, "slow", port=1)
        talker = nick(server, "talk", port=2)
        slow.transport.producer.pauseProducing()  # its buffer is full
        for _ in range(20):
            talker.send(b"!sendmsg " + b"x" * 50 + b"\n")
        self.assertTrue(aborted(slow))
        self.assertEqual(
            [(e["reason"], e["limit"]) for e in events.events if "reason" in e],
            [("slow-reader", 1000)],
        )

    def test_drained_buffer_forgives(self) -> None:
        server = Server(max_output_backlog=1000, command_burst=100)
        reader = nick(server, "r", port=1)
        talker = nick(server, "t", port=2)
        for _ in range(5):
            reader.transport.producer.pauseProducing()
            for _ in range(10):
                talker.send(b"!sendmsg " + b"x" * 50 + b"\n")
            reader.transport.producer.resumeProducing()
        self.assertFalse(reader.closed)

    def test_close_cannot_stall(self) -> None:
        server = Server(close_grace=2.0)
        client = server.connect()
        client.send(b"!users\n")  # nick-required: closed
        self.assertTrue(client.closed)
        self.assertFalse(aborted(client))
        server.clock.advance(2.0)
        self.assertTrue(aborted(client))

    def test_no_abort_due_after_the_connection_is_gone(self) -> None:
        """A client that leaves while its refusal waits leaves no timer behind."""
        store = HeldStore()
        server = Server(store=store)
        client = server.connect()
        client.send(command(b"register", b"bob") + command(b"bogus"))
        client.close()
        store.commit()
        self.assertEqual(server.clock.getDelayedCalls(), [])

    def test_nothing_written_after_close(self) -> None:
        server = Server()
        closing = nick(server, "a", port=1)
        closing.send(b"!nick again\n" + b"x" * 2000 + b"\n")  # line-too-long closes
        closing.take()
        talker = nick(server, "b", port=2)
        talker.send(b"!sendmsg hi\n")
        self.assertEqual(closing.take(), b"")


class UserLimitTests(SynchronousTestCase):
    def test_total(self) -> None:
        server = Server(max_binary_users=2)
        register(server, b"a", host="10.0.0.1")
        register(server, b"b", host="10.0.0.2")
        client = server.connect("10.0.0.3")
        client.send(command(b"register", b"c"))
        self.assertEqual(client.frames(), [b"Server is full!"])
        self.assertTrue(client.closed)

    def test_per_host(self) -> None:
        server = Server(max_binary_users_per_host=2)
        register(server, b"a")
        register(server, b"b")
        client = server.connect()
        client.send(command(b"register", b"c"))
        self.assertEqual(client.frames(), [b"Too many users from your host!"])
        register(server, b"c", host="10.0.0.9")

    def test_claim_back_at_the_limit(self) -> None:
        server = Server(max_binary_users_per_host=1)
        register(server, b"a").close()
        again = server.connect()
        again.send(command(b"register", b"a"))
        self.assertEqual(again.frames(), [b"Nice to see you, a"])

    def test_logout_frees_a_place(self) -> None:
        server = Server(max_binary_users=1)
        first = register(server, b"a")
        first.send(command(b"logout"))
        first.take()
        register(server, b"b")


class MailboxTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.server = Server(mailbox_size=2)
        self.bob = register(self.server, b"bob", host="10.0.0.1")
        self.sender = register(self.server, b"eve", host="10.0.0.2")

    def fill(self) -> None:
        for text in (b"one", b"two"):
            self.sender.send(command(b"send", b"bob", text))
            self.assertEqual(self.sender.frames(), [b"Message added to storage!"])

    def test_send(self) -> None:
        self.fill()
        self.sender.send(command(b"send", b"bob", b"three"))
        self.assertEqual(self.sender.frames(), [b"Mailbox of 'bob' is full!"])
        self.assertFalse(self.sender.closed)
        self.bob.send(command(b"receive"))
        self.assertEqual(self.bob.frames(), [b"2", b"eve", b"one", b"eve", b"two"])

    def test_sendall_names_the_full(self) -> None:
        carol = register(self.server, b"carol", host="10.0.0.3")
        self.fill()
        self.sender.send(command(b"sendall", b"hi"))
        self.assertEqual(
            self.sender.frames(),
            [b"Message added to storage, but mailboxes of 'bob' are full!"],
        )
        carol.send(command(b"receive"))
        self.assertEqual(carol.frames(), [b"1", b"eve", b"hi"])

    def test_line_sendto_sendmsg_poke(self) -> None:
        self.fill()
        line = nick(self.server, "liz")
        for cmd in (b"!sendto bob hi\n", b"!sendmsg hi\n", b"!poke bob\n"):
            line.send(cmd)
            self.assertEqual(
                line.lines()[-1], "!error mailbox-full mailbox full, not delivered to: bob"
            )
        self.assertFalse(line.closed)


class ShutdownTests(SynchronousTestCase):
    def test_everyone_told_and_gone(self) -> None:
        server = Server(close_grace=2.0)
        line = nick(server, "a", port=1)
        binary = register(server, b"b", port=2)
        silent = server.connect(port=3)
        line.take()
        done = server.factory.shutdown()
        self.assertEqual(line.lines(), ["!error server-shutdown the server is shutting down"])
        self.assertEqual(binary.take(), b"")
        self.assertEqual(silent.lines(), ["!error server-shutdown the server is shutting down"])
        self.assertTrue(all(c.closed for c in (line, binary, silent)))
        self.assertNoResult(done)
        line.close()
        binary.close()
        server.clock.advance(2.0)
        self.assertTrue(aborted(silent))
        silent.close()
        self.successResultOf(done)

    def test_nobody_there(self) -> None:
        self.successResultOf(Server().factory.shutdown())

    def test_service_drains_after_ports(self) -> None:
        config = Options()
        config.parseOptions(["--port", "tcp:0:interface=127.0.0.1"])
        top = makeService(config)
        self.assertIsInstance(top, MultiService)
        self.assertIsInstance(list(top)[0], Draining)


class OptionsTests(SynchronousTestCase):
    def test_every_limit_an_option(self) -> None:
        config = Options()
        config.parseOptions(
            ["--max-connections", "7", "--command-rate", "0.5", "--close-grace", "1"]
        )
        limits = config.limits()
        self.assertEqual(
            (limits.max_connections, limits.command_rate, limits.close_grace), (7, 0.5, 1.0)
        )

    def test_input_backlog_holds_a_command(self) -> None:
        config = Options()
        self.assertRaises(
            usage.UsageError, config.parseOptions, ["--max-input-backlog", "1000"]
        )

    def test_times_positive(self) -> None:
        for name in ("--handshake-timeout", "--idle-timeout", "--command-rate", "--close-grace"):
            self.assertRaises(usage.UsageError, Options().parseOptions, [name, "0"])
