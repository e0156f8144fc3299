"""One read, one write: what the commands of one read send a session goes out at once.

Every test counts the transport writes each connection gets; the bytes are
those PROTOCOL.md prescribes, in the order the commands came.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from tests.support import Client, Server, command, parse_frames


class WriteLog(StringTransport):
    """A StringTransport that keeps every write apart, and drops what is
    written after C{loseConnection}, as a TLS transport does."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not self.disconnecting:
            self.writes.append(data)
            super().write(data)


class Connection(Client):
    """A client whose transport logs its writes one by one."""

    def __init__(self, server: Server, port: int) -> None:
        # Client's own set-up, with a WriteLog for its transport.
        self.server = server
        self.protocol = server.factory.buildProtocol(None)
        self.transport = WriteLog()
        self.protocol.makeConnection(self.transport)

    def writes(self) -> list[bytes]:
        """The writes since the last call, apart."""
        writes = self.transport.writes
        self.transport.writes = []
        self.transport.clear()
        return writes


class Room:
    """A server with line users alice, bob and carol, and binary user zed."""

    def __init__(self, hold_turns: bool = False) -> None:
        self.server = Server(hold_turns=hold_turns)
        self.ports = iter(range(40000, 41000))
        self.alice, self.bob, self.carol = (
            self.line(name) for name in ("alice", "bob", "carol")
        )
        self.zed = self.connect()
        self.zed.send(command(b"register", b"zed"))
        self.server.clock.advance(0)
        for client in (self.alice, self.bob, self.carol, self.zed):
            client.writes()

    def connect(self) -> Connection:
        return Connection(self.server, next(self.ports))

    def line(self, name: str) -> Connection:
        client = self.connect()
        client.send(f"!nick {name}\n".encode())
        return client


def lines(*texts: str) -> bytes:
    return "".join(text + "\n" for text in texts).encode()


class LineTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.room = Room()

    def test_three_messages_one_write_each(self) -> None:
        room = self.room
        room.alice.send(b"!sendmsg one\n!sendmsg two\n!sendmsg three\n")
        msgs = lines("!msg alice one", "!msg alice two", "!msg alice three")
        self.assertEqual(room.bob.writes(), [msgs])
        self.assertEqual(room.carol.writes(), [msgs])
        self.assertEqual(room.alice.writes(), [])

    def test_replies_of_one_read_one_write(self) -> None:
        room = self.room
        room.alice.send(b"!users\n!bogus\n!nick again\n")
        [write] = room.alice.writes()
        self.assertEqual(
            write.decode().splitlines(),
            [
                "!users 4 alice bob carol zed",
                "!error unknown-command !bogus is not a command; try !help",
                "!error bad-arguments you have a name; use !changenickname",
            ],
        )

    def test_replies_in_order_with_what_is_pushed(self) -> None:
        room = self.room
        room.alice.send(b"!sendmsg hi\n!poke bob\n!users\n!sendto bob psst\n!sendmsg bye\n")
        self.assertEqual(
            room.alice.writes(),
            [lines("!poke alice bob", "!users 4 alice bob carol zed")],
        )
        self.assertEqual(
            room.bob.writes(),
            [lines("!msg alice hi", "!poke alice bob", "!privmsg alice psst", "!msg alice bye")],
        )
        self.assertEqual(
            room.carol.writes(), [lines("!msg alice hi", "!poke alice bob", "!msg alice bye")]
        )

    def test_rename_within_a_read(self) -> None:
        room = self.room
        room.alice.send(b"!sendmsg x\n!changenickname al\n!sendmsg y\n")
        self.assertEqual(room.alice.writes(), [lines("!changenickname alice al")])
        self.assertEqual(
            room.bob.writes(), [lines("!msg alice x", "!changenickname alice al", "!msg al y")]
        )

    def test_join_within_a_read(self) -> None:
        room = self.room
        dave = room.connect()
        dave.send(b"!help\n!nick dave\n!sendmsg hello\n")
        [write] = dave.writes()
        self.assertTrue(write.startswith(b"!help !nick "))
        self.assertTrue(write.endswith(lines("!users 5 alice bob carol zed dave")))
        self.assertEqual(room.bob.writes(), [lines("!joined dave", "!msg dave hello")])

    def test_leave_within_a_read(self) -> None:
        room = self.room
        room.alice.send(b"!sendmsg bye\n!poke bob\n!quit\n")
        self.assertEqual(room.alice.writes(), [lines("!poke alice bob")])
        self.assertTrue(room.alice.closed)
        self.assertEqual(
            room.bob.writes(), [lines("!msg alice bye", "!poke alice bob", "!left alice")]
        )

    def test_refusal_is_written_before_the_close(self) -> None:
        stranger = self.room.connect()
        stranger.send(b"!sendmsg x\n!sendmsg y\n")
        self.assertEqual(
            stranger.writes(), [lines("!error nick-required send !nick NAME first")]
        )
        self.assertTrue(stranger.closed)

    def test_unterminated_line_flushed_by_the_clock(self) -> None:
        # As PyChat's client sends: one command a send(), no line end.
        room = self.room
        dave = room.connect()
        dave.send(b"!nick dave")
        room.server.clock.advance(room.server.hub.limits.line_flush)
        self.assertEqual(dave.writes(), [lines("!users 5 alice bob carol zed dave")])
        dave.send(b"!sendmsg late")
        self.assertEqual(room.bob.writes(), [lines("!joined dave")])
        room.server.clock.advance(room.server.hub.limits.line_flush)
        self.assertEqual(room.bob.writes(), [lines("!msg dave late")])

    def test_a_read_with_nothing_to_send_writes_nothing(self) -> None:
        room = self.room
        room.alice.send(b"\n\n!sendmsg par")
        for client in (room.alice, room.bob, room.carol, room.zed):
            self.assertEqual(client.writes(), [])


class BinaryTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.room = Room()

    def test_replies_of_one_read_one_write(self) -> None:
        room = self.room
        room.zed.send(command(b"users") + command(b"send", b"zed", b"me") + command(b"receive"))
        [write] = room.zed.writes()
        self.assertEqual(
            parse_frames(write),
            [b"4", b"alice", b"bob", b"carol", b"zed",
             b"Message added to storage!", b"1", b"zed", b"me"],
        )

    def test_refusal_is_written_before_the_close(self) -> None:
        room = self.room
        room.zed.send(command(b"users") + command(b"sendall", b"") + command(b"users"))
        [write] = room.zed.writes()
        self.assertEqual(parse_frames(write)[-1], b"Bad message!")
        self.assertTrue(room.zed.closed)

    def test_sendall_twice_one_write_each(self) -> None:
        room = self.room
        room.zed.send(command(b"sendall", b"a") + command(b"sendall", b"b"))
        self.assertEqual(room.bob.writes(), [lines("!msg zed a", "!msg zed b")])
        self.assertEqual(len(room.zed.writes()), 1)

    def test_register_and_sendall_one_write(self) -> None:
        room = self.room
        yan = room.connect()
        yan.send(command(b"register", b"yan") + command(b"sendall", b"hey"))
        self.assertEqual(parse_frames(b"".join(yan.writes())), [b"Hello, yan", b"Message added to storage!"])
        self.assertEqual(room.carol.writes(), [lines("!joined yan", "!msg yan hey")])


# Lines alice may send, well-formed or not.
LINES = st.sampled_from(
    [
        "!sendmsg hi",
        "!sendmsg  spaced out ",
        "!sendmsg",
        "!sendto bob psst",
        "!sendto zed mail",
        "!sendto nobody x",
        "!poke carol",
        "!poke zed",
        "!users",
        "!help",
        "!nick again",
        "!changenickname al",
        "!changenickname alice",
        "!changenickname bob",
        "!bogus",
        "",
        "!quit",
    ]
)


def replay(reads: list[bytes]) -> tuple[dict[str, list[bytes]], list[bytes]]:
    """Alice's reads in a fresh room: every client's writes, and zed's mail."""
    room = Room()
    for data in reads:
        if not room.alice.closed:
            room.alice.send(data)
    clients = {"alice": room.alice, "bob": room.bob, "carol": room.carol}
    room.zed.send(command(b"receive"))
    return {name: c.writes() for name, c in clients.items()}, room.zed.writes()


class SameBytesTests(SynchronousTestCase):
    @given(st.lists(LINES, max_size=12))
    def test_one_read_or_many_same_bytes(self, said: list[str]) -> None:
        """Lines in one read or one read each: the same bytes, one write a read."""
        encoded = [line.encode() + b"\n" for line in said]
        together, mail = replay([b"".join(encoded)])
        apart, mail_apart = replay(encoded)
        self.assertEqual(mail, mail_apart)
        for name in together:
            self.assertLessEqual(len(together[name]), 1, name)
            self.assertEqual(b"".join(together[name]), b"".join(apart[name]), name)


class TurnTests(SynchronousTestCase):
    """Given the reactor as its clock, the hub holds to the end of the turn:
    what the reads of several clients send still reaches each session in one
    write, in the order the commands were handled."""

    def setUp(self) -> None:
        self.room = Room(hold_turns=True)

    def end_turn(self) -> None:
        self.room.server.clock.advance(0)

    def test_two_senders_one_write_each(self) -> None:
        room = self.room
        room.alice.send(b"!sendmsg one\n")
        room.bob.send(b"!sendmsg two\n")
        self.assertEqual(room.carol.writes(), [])
        self.end_turn()
        self.assertEqual(room.carol.writes(), [lines("!msg alice one", "!msg bob two")])
        self.assertEqual(room.alice.writes(), [lines("!msg bob two")])
        self.assertEqual(room.bob.writes(), [lines("!msg alice one")])

    def test_burst_of_joins_one_write_each(self) -> None:
        room = self.room
        dave, erin = room.connect(), room.connect()
        dave.send(b"!nick dave\n")
        erin.send(b"!nick erin\n")
        self.end_turn()
        self.assertEqual(room.alice.writes(), [lines("!joined dave", "!joined erin")])
        self.assertEqual(
            dave.writes(), [lines("!users 5 alice bob carol zed dave", "!joined erin")]
        )
        self.assertEqual(erin.writes(), [lines("!users 6 alice bob carol zed dave erin")])

    def test_binary_replies_wait_for_the_turn_in_order(self) -> None:
        room = self.room
        room.zed.send(command(b"users"))
        room.alice.send(b"!sendto zed hi\n")
        room.zed.send(command(b"receive"))
        self.assertEqual(room.zed.writes(), [])
        self.end_turn()
        [write] = room.zed.writes()
        self.assertEqual(
            parse_frames(write),
            [b"4", b"alice", b"bob", b"carol", b"zed", b"1", b"alice", b"hi"],
        )

    def test_refusal_is_written_at_once(self) -> None:
        room = self.room
        room.alice.send(b"!sendmsg held\n")
        stranger = room.connect()
        stranger.send(b"!users\n")
        self.assertTrue(stranger.closed)
        self.assertEqual(
            stranger.writes(), [lines("!error nick-required send !nick NAME first")]
        )
        # Closing one connection writes only what was held for it: the
        # others keep their one write at the end of the turn.
        self.assertEqual(room.bob.writes(), [])
        self.end_turn()
        self.assertEqual(room.bob.writes(), [lines("!msg alice held")])

    def test_quitting_user_gets_what_came_before_its_quit(self) -> None:
        room = self.room
        room.alice.send(b"!sendmsg before\n")
        room.bob.send(b"!quit\n")
        room.alice.send(b"!sendmsg after\n")
        self.assertTrue(room.bob.closed)
        self.assertEqual(room.bob.writes(), [lines("!msg alice before")])
        self.end_turn()
        self.assertEqual(
            room.carol.writes(), [lines("!msg alice before", "!left bob", "!msg alice after")]
        )
