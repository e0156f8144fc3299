"""The binary protocol (PROTOCOL.md section 4), section 2's rules as it sees
them, and the paths between it and the line protocol."""

from __future__ import annotations

import struct
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tests.support import Client, Server, command, frame, parse_frames

HOME = "10.0.0.1"
AWAY = "10.0.0.2"

# Reply texts as PROTOCOL.md spells them, written out rather than imported so
# that a changed byte fails here.
ADDED = "Message added to storage!"
LOGGED_OUT = "U've been successfully logouted"
NOT_REGISTERED = "U aren't registered!"
BAD_LOGIN = "Bad login!"
BAD_MESSAGE = "Bad message!"
UNKNOWN_COMMAND = "Unknown command!"
FRAME_TOO_LONG = "Frame is too long!"
# A length prefix over the default limit of 1024 whose first byte, 0x01,
# still starts the binary protocol.
OVER_LIMIT = struct.pack("<I", 1025)


def cmd(*parts: str | bytes) -> bytes:
    """A binary command; C{str} parts are sent as UTF-8."""
    return command(*(p.encode("utf-8") if isinstance(p, str) else p for p in parts))


def replies(client: Client) -> list[str]:
    """Every frame the server wrote to C{client} since the last look, decoded."""
    return [payload.decode("utf-8") for payload in client.frames()]


def too_long(limit: int) -> str:
    return f"Massage is too long! Max length = {limit}!"


def with_text(verb: str, text: str | bytes) -> tuple[str | bytes, ...]:
    """The C{send} (to alice) or C{sendall} command carrying C{text}."""
    return ("send", "alice", text) if verb == "send" else ("sendall", text)


class BinaryCase(SynchronousTestCase):
    """A fresh server per test, and the moves of its binary and line clients."""

    limits: dict[str, Any] = {}

    def setUp(self) -> None:
        self.server = Server(**self.limits)

    def connect(self, host: str = HOME) -> Client:
        return self.server.connect(host=host)

    def ask(self, client: Client, *parts: str | bytes) -> list[str]:
        """Send one command; every frame the server answered, decoded."""
        client.send(cmd(*parts))
        return replies(client)

    def register(self, name: str, host: str = HOME) -> Client:
        """A new connection that registers a new C{name}."""
        client = self.connect(host)
        self.assertEqual(self.ask(client, "register", name), [f"Hello, {name}"])
        return client

    def line_user(self, name: str, host: str = HOME) -> Client:
        """A new line-protocol connection holding C{name}, its output drained."""
        client = self.connect(host)
        client.send(f"!nick {name}\n".encode("utf-8"))
        self.assertTrue(client.lines()[0].startswith("!users "))
        return client

    def drain(self, *clients: Client) -> None:
        for client in clients:
            client.take()

    def names(self, client: Client) -> list[str]:
        """The user list as C{users} gives it; its count must match."""
        count, *names = self.ask(client, "users")
        self.assertEqual(int(count), len(names))
        return names

    def mail(self, client: Client) -> list[tuple[str, str]]:
        """The C{(sender, text)} pairs C{receive} gives; its count must match."""
        count, *rest = self.ask(client, "receive")
        self.assertEqual(int(count) * 2, len(rest))
        return list(zip(rest[::2], rest[1::2]))

    def assertRefused(self, client: Client, parts: tuple[str | bytes, ...], reply: str) -> None:
        """The command gets exactly C{reply}, one frame, and the connection is
        closed: a command after it in the same segment is not answered."""
        client.send(cmd(*parts) + cmd("users"))
        self.assertEqual(replies(client), [reply], f"for {parts!r}")
        self.assertTrue(client.closed, f"still open after {parts!r}")

    def assertRefusedFresh(self, parts: tuple[str | bytes, ...], reply: str) -> None:
        """L{assertRefused} on a new connection."""
        self.assertRefused(self.connect(), parts, reply)

    def assertOpen(self, client: Client) -> None:
        self.assertFalse(client.closed)
        self.assertNotEqual(self.ask(client, "users"), [])


class RegisterTests(BinaryCase):
    def test_new_name(self) -> None:
        client = self.register("alice")
        self.assertOpen(client)
        self.assertEqual(self.names(client), ["alice"])

    def test_claimed_again_from_same_host(self) -> None:
        first = self.register("alice")
        second = self.connect(HOME)
        self.assertEqual(self.ask(second, "register", "alice"), ["Nice to see you, alice"])
        self.assertOpen(first)
        self.assertOpen(second)
        self.assertEqual(self.names(second), ["alice"])

    def test_claimed_again_after_going_offline(self) -> None:
        self.register("alice").close()
        again = self.connect(HOME)
        self.assertEqual(self.ask(again, "register", "alice"), ["Nice to see you, alice"])

    def test_claim_shows_the_registered_spelling(self) -> None:
        self.register("Alice")
        again = self.connect(HOME)
        self.assertEqual(self.ask(again, "register", "aLICE"), ["Nice to see you, Alice"])

    def test_same_name_again_on_same_connection(self) -> None:
        client = self.register("alice")
        self.assertEqual(self.ask(client, "register", "alice"), ["Nice to see you, alice"])
        self.assertOpen(client)

    def test_name_held_from_another_host(self) -> None:
        self.register("alice", host=HOME)
        self.assertRefused(self.connect(AWAY), ("register", "ALICE"), "'ALICE' already exists!")
        self.assertEqual(self.names(self.connect()), ["alice"])

    def test_name_held_by_line_user_case_insensitive(self) -> None:
        # Even from the line user's own host: only binary names are claimed back.
        self.line_user("Bob", host=HOME)
        self.assertRefusedFresh(("register", "bob"), "'bob' already exists!")

    def test_name_not_utf8(self) -> None:
        self.assertRefusedFresh(("register", b"al\xffce"), "Can't decode login!")

    def test_bad_names(self) -> None:
        for name in ["", " ", "a b", "a\tb", "\u00a0x", "a\x01", "a\x1b[2J", "a\x7f", "a\x9b"]:
            self.assertRefusedFresh(("register", name), BAD_LOGIN)
        self.assertEqual(self.names(self.connect()), [])

    def test_name_too_long(self) -> None:
        self.assertRefusedFresh(("register", "abcdefghi"), "Login is too long!")
        self.assertRefusedFresh(("register", "ПётрПётрП"), "Login is too long!")

    def test_length_counted_in_characters(self) -> None:
        self.register("ПётрПётр")  # 8 characters, 16 bytes
        self.register("abcdefgh", host=AWAY)

    def test_already_registered_as_another_name(self) -> None:
        client = self.register("alice")
        self.assertRefused(client, ("register", "bob"), "Already registered as 'alice'!")
        self.assertEqual(self.names(self.connect()), ["alice"])


class UsersTests(BinaryCase):
    def test_no_users(self) -> None:
        self.assertEqual(self.ask(self.connect(), "users"), ["0"])

    def test_both_protocols_in_order_of_arrival(self) -> None:
        self.register("alice")
        self.line_user("bob")
        self.register("carol", host=AWAY)
        self.line_user("Dave")
        self.assertEqual(
            self.ask(self.connect(), "users"), ["4", "alice", "bob", "carol", "Dave"]
        )

    def test_offline_users_stay_logged_out_users_go(self) -> None:
        self.register("alice").close()
        gone = self.register("bob")
        self.ask(gone, "logout")
        self.register("carol")
        self.assertEqual(self.names(self.connect()), ["alice", "carol"])

    def test_disconnected_line_user_goes(self) -> None:
        self.line_user("bob").close()
        self.assertEqual(self.names(self.connect()), [])


class SendTests(BinaryCase):
    def setUp(self) -> None:
        super().setUp()
        self.alice = self.register("alice")
        self.bob = self.register("bob")

    def test_waits_in_mailbox_until_receive(self) -> None:
        self.assertEqual(self.ask(self.bob, "send", "alice", "hi"), [ADDED])
        self.assertEqual(self.alice.take(), b"")
        self.assertEqual(self.mail(self.alice), [("bob", "hi")])

    def test_receiver_case_insensitive(self) -> None:
        self.assertEqual(self.ask(self.bob, "send", "ALICE", "hi"), [ADDED])
        self.assertEqual(self.mail(self.alice), [("bob", "hi")])

    def test_unknown_receiver_keeps_connection(self) -> None:
        reply = self.ask(self.bob, "send", "Nobody", "hi")
        self.assertEqual(reply, ["User 'Nobody' doesn't exist!"])
        self.assertOpen(self.bob)

    def test_before_register(self) -> None:
        self.assertRefusedFresh(("send", "alice", "hi"), NOT_REGISTERED)
        self.assertEqual(self.mail(self.alice), [])

    def test_checks_registration_then_text_then_receiver(self) -> None:
        self.assertRefusedFresh(("send", "nobody", "x" * 61), NOT_REGISTERED)
        self.assertRefused(self.bob, ("send", "nobody", "x" * 61), too_long(60))
        self.assertRefused(self.register("carol"), ("send", "nobody", ""), BAD_MESSAGE)

    def test_to_line_user_pushed_at_once(self) -> None:
        dave = self.line_user("Dave")
        self.assertEqual(self.ask(self.bob, "send", "dave", "hi there"), [ADDED])
        self.assertEqual(dave.lines(), ["!privmsg bob hi there"])

    def test_utf8_round_trip(self) -> None:
        zoe = self.register("Zoë")
        self.assertEqual(self.ask(zoe, "send", "alice", "привет 👋"), [ADDED])
        self.assertEqual(self.mail(self.alice), [("Zoë", "привет 👋")])


class TextRuleTests(BinaryCase):
    """Section 2's text rules, the same for C{send} and C{sendall}."""

    def setUp(self) -> None:
        super().setUp()
        self.limit = self.limits.get("max_message_length", 60)
        self.alice = self.register("alice")

    def sender(self) -> Client:
        """A connection holding bob: a new name, or claimed back from bob's host."""
        client = self.connect(AWAY)
        reply = self.ask(client, "register", "bob")
        self.assertIn(reply, [["Hello, bob"], ["Nice to see you, bob"]])
        return client

    def assertTextRefused(self, text: str | bytes, reply: str) -> None:
        for verb in ("send", "sendall"):
            self.assertRefused(self.sender(), with_text(verb, text), reply)
        self.assertEqual(self.mail(self.alice), [])

    def test_text_too_long(self) -> None:
        self.assertTextRefused("x" * (self.limit + 1), too_long(self.limit))

    def test_text_of_limit_counted_in_characters(self) -> None:
        text = "é" * self.limit
        sender = self.sender()
        for verb in ("send", "sendall"):
            self.assertEqual(self.ask(sender, *with_text(verb, text)), [ADDED], verb)
        self.assertEqual(self.mail(self.alice), [("bob", text)] * 2)

    def test_bad_texts(self) -> None:
        for text in [b"", b"caf\xe9", "a\x07", "\x1b[2J", "a\x7f", "a\x9b"]:
            self.assertTextRefused(text, BAD_MESSAGE)


class TextLimitOptionTests(TextRuleTests):
    """With C{--max-message-length 20}, the limit and its reply say 20."""

    limits = {"max_message_length": 20}


class SendAllTests(BinaryCase):
    def test_queued_for_every_other_binary_user(self) -> None:
        alice = self.register("alice")
        bob = self.register("bob")
        self.register("carol").close()
        self.assertEqual(self.ask(alice, "sendall", "hey"), [ADDED])
        self.assertEqual(self.mail(bob), [("alice", "hey")])
        self.assertEqual(self.mail(alice), [])
        carol = self.connect()
        self.ask(carol, "register", "carol")
        self.assertEqual(self.mail(carol), [("alice", "hey")])

    def test_pushed_to_every_line_user(self) -> None:
        lines = [self.line_user("bob"), self.line_user("dave")]
        self.drain(*lines)
        self.assertEqual(self.ask(self.register("alice"), "sendall", "hey all"), [ADDED])
        for client in lines:
            self.assertEqual(client.lines(), ["!joined alice", "!msg alice hey all"])

    def test_before_register(self) -> None:
        alice = self.register("alice")
        self.assertRefusedFresh(("sendall", "hey"), NOT_REGISTERED)
        self.assertEqual(self.mail(alice), [])


class ReceiveTests(BinaryCase):
    def test_oldest_first_then_empty(self) -> None:
        alice = self.register("alice")
        bob, carol = self.register("bob"), self.register("carol")
        self.ask(bob, "send", "alice", "one")
        self.ask(carol, "send", "alice", "two")
        self.ask(bob, "sendall", "three")
        self.assertEqual(
            self.ask(alice, "receive"), ["3", "bob", "one", "carol", "two", "bob", "three"]
        )
        self.assertEqual(self.ask(alice, "receive"), ["0"])

    def test_mail_waits_while_offline(self) -> None:
        self.register("alice").close()
        self.ask(self.register("bob", host=AWAY), "send", "alice", "while you were out")
        again = self.connect(HOME)
        self.ask(again, "register", "alice")
        self.assertEqual(self.mail(again), [("bob", "while you were out")])

    def test_before_register(self) -> None:
        self.assertRefusedFresh(("receive",), NOT_REGISTERED)


class LogoutTests(BinaryCase):
    def test_name_and_mailbox_gone(self) -> None:
        alice = self.register("alice")
        self.ask(self.register("bob"), "send", "alice", "unread")
        self.assertEqual(self.ask(alice, "logout"), [LOGGED_OUT])
        self.assertOpen(alice)
        self.assertEqual(self.names(alice), ["bob"])
        self.assertEqual(self.ask(alice, "register", "alice"), ["Hello, alice"])
        self.assertEqual(self.mail(alice), [])

    def test_name_free_for_any_host(self) -> None:
        self.ask(self.register("alice", host=HOME), "logout")
        self.register("ALICE", host=AWAY)

    def test_connection_is_unregistered_after(self) -> None:
        alice = self.register("alice")
        self.ask(alice, "logout")
        self.assertRefused(alice, ("send", "alice", "hi"), NOT_REGISTERED)

    def test_line_users_see_left(self) -> None:
        bob = self.line_user("bob")
        alice = self.register("alice")
        self.drain(bob)
        self.ask(alice, "logout")
        self.assertEqual(bob.lines(), ["!left alice"])

    def test_before_register_removes_nothing(self) -> None:
        self.register("alice", host=HOME)
        stranger = self.connect(HOME)
        self.assertEqual(self.ask(stranger, "logout"), [LOGGED_OUT])
        self.assertOpen(stranger)
        self.assertEqual(self.names(stranger), ["alice"])

    def test_never_removes_another_name_on_same_host(self) -> None:
        self.register("alice", host=HOME)
        bob = self.register("bob", host=HOME)
        self.ask(bob, "logout")
        self.ask(bob, "logout")
        self.assertEqual(self.names(bob), ["alice"])

    def claimed_and_logged_out_elsewhere(self) -> Client:
        """A connection holding alice, whose other connection logged alice out."""
        first = self.register("alice")
        second = self.connect(HOME)
        self.ask(second, "register", "alice")
        self.assertEqual(self.ask(second, "logout"), [LOGGED_OUT])
        return first

    def test_shared_name_logged_out_elsewhere(self) -> None:
        first = self.claimed_and_logged_out_elsewhere()
        self.assertEqual(self.names(first), [])
        self.assertRefused(first, ("receive",), NOT_REGISTERED)

    def test_shared_name_logged_out_elsewhere_frees_connection(self) -> None:
        first = self.claimed_and_logged_out_elsewhere()
        self.assertEqual(self.ask(first, "register", "bob"), ["Hello, bob"])


class BadFrameTests(BinaryCase):
    def test_unknown_command(self) -> None:
        for name in ["bogus", "", "USERS", "users "]:
            self.assertRefusedFresh((name,), UNKNOWN_COMMAND)

    def test_unknown_command_when_registered(self) -> None:
        self.assertRefused(self.register("alice"), ("help",), UNKNOWN_COMMAND)

    def test_frame_too_long_answered_before_its_body(self) -> None:
        client = self.connect()
        client.send(OVER_LIMIT)
        self.assertEqual(client.frames(), [FRAME_TOO_LONG.encode()])
        self.assertTrue(client.closed)

    def test_frame_of_default_limit_is_read(self) -> None:
        client = self.register("alice")
        self.assertRefused(client, ("sendall", "x" * 1024), too_long(60))


class FrameLimitOptionTests(BinaryCase):
    limits = {"max_frame_length": 8}

    def test_frame_of_limit_is_read(self) -> None:
        self.register("abcdefgh")  # "register" and the name: 8 bytes each

    def test_frame_over_limit(self) -> None:
        self.assertRefused(self.register("alice"), ("sendall", "123456789"), FRAME_TOO_LONG)


class OneWriteTests(BinaryCase):
    """Each command's reply, however many frames, is one transport write."""

    def writes(self, client: Client) -> list[bytes]:
        calls: list[bytes] = []
        write = client.transport.write

        def counted(data: bytes) -> None:
            calls.append(data)
            write(data)

        self.patch(client.transport, "write", counted)
        return calls

    def assertOneWrite(
        self, client: Client, parts: tuple[str | bytes, ...], reply: list[str]
    ) -> None:
        calls = self.writes(client)
        client.send(cmd(*parts))
        self.assertEqual(len(calls), 1, f"{parts!r} written as {calls!r}")
        self.assertEqual(parse_frames(calls[0]), [text.encode() for text in reply])

    def test_every_reply(self) -> None:
        alice, bob = self.register("alice"), self.register("bob")
        self.ask(bob, "send", "alice", "one")
        self.ask(bob, "sendall", "two")
        steps = [
            (alice, ("users",), ["2", "alice", "bob"]),
            (alice, ("receive",), ["2", "bob", "one", "bob", "two"]),
            (alice, ("send", "bob", "hi"), [ADDED]),
            (alice, ("send", "nobody", "hi"), ["User 'nobody' doesn't exist!"]),
            (alice, ("sendall", "hi"), [ADDED]),
            (self.connect(), ("register", "alice"), ["Nice to see you, alice"]),
            (bob, ("logout",), [LOGGED_OUT]),
            (alice, ("register", "bob"), ["Already registered as 'alice'!"]),
            (self.connect(), ("receive",), [NOT_REGISTERED]),
            (self.connect(), ("register", ""), [BAD_LOGIN]),
            (self.connect(), ("bogus",), [UNKNOWN_COMMAND]),
        ]
        for client, parts, reply in steps:
            self.assertOneWrite(client, parts, reply)

    def test_frame_too_long(self) -> None:
        client = self.connect()
        calls = self.writes(client)
        client.send(OVER_LIMIT)
        self.assertEqual(calls, [frame(FRAME_TOO_LONG.encode())])


# One client's session fed to a fresh server, and every frame it gets back.
SESSION = b"".join(
    [
        cmd("register", "Zoë"),
        cmd("users"),
        cmd("send", "zoë", "привет 👋"),
        cmd("sendall", "to nobody else"),
        cmd("receive"),
        cmd("send", "Nobody", "hi"),
        cmd("logout"),
        cmd("users"),
        cmd("bogus"),
        cmd("users"),
    ]
)
SESSION_REPLIES = [
    "Hello, Zoë",
    "1",
    "Zoë",
    ADDED,
    ADDED,
    "1",
    "Zoë",
    "привет 👋",
    "User 'Nobody' doesn't exist!",
    LOGGED_OUT,
    "0",
    UNKNOWN_COMMAND,
]
# A session cut short by an over-long frame, its body and more commands behind it.
OVERSIZED = cmd("users") + OVER_LIMIT + b"x" * 40 + cmd("users")
OVERSIZED_REPLIES = ["0", FRAME_TOO_LONG]


def replay(*segments: bytes) -> tuple[bytes, bool]:
    """Feed C{segments} to a fresh server: what it wrote, and whether it closed."""
    client = Server().connect()
    for segment in segments:
        client.send(segment)
    return client.take(), client.closed


class SegmentationTests(SynchronousTestCase):
    """How a session is cut into segments changes nothing a client sees."""

    def assertSameAtEverySplit(self, session: bytes, replies: list[str]) -> None:
        whole = replay(session)
        self.assertEqual(whole, (b"".join(frame(r.encode()) for r in replies), True))
        for at in range(1, len(session)):
            self.assertEqual(replay(session[:at], session[at:]), whole, f"split at {at}")
        bytewise = [session[i : i + 1] for i in range(len(session))]
        self.assertEqual(replay(*bytewise), whole, "byte by byte")

    def test_session(self) -> None:
        self.assertSameAtEverySplit(SESSION, SESSION_REPLIES)

    def test_oversized_frame(self) -> None:
        self.assertSameAtEverySplit(OVERSIZED, OVERSIZED_REPLIES)


class LineAndBinaryTests(BinaryCase):
    """The paths between the two protocols over one user list and mailboxes."""

    def setUp(self) -> None:
        super().setUp()
        self.bob = self.line_user("bob")
        self.alice = self.register("alice")
        self.drain(self.bob)

    def test_register_announced_once(self) -> None:
        carol = self.register("carol", host=AWAY)
        self.ask(self.connect(AWAY), "register", "carol")
        self.ask(carol, "register", "carol")
        self.assertEqual(self.bob.lines(), ["!joined carol"])

    def test_logout_announced(self) -> None:
        self.ask(self.alice, "logout")
        self.assertEqual(self.bob.lines(), ["!left alice"])

    def test_offline_without_logout_stays_a_user(self) -> None:
        self.alice.close()
        self.assertEqual(self.bob.lines(), [])
        self.bob.send(b"!users\n")
        self.assertEqual(self.bob.lines(), ["!users 2 bob alice"])
        self.assertEqual(self.names(self.connect()), ["bob", "alice"])

    def test_sendmsg_reaches_mailboxes(self) -> None:
        self.register("carol").close()
        self.bob.send("!sendmsg héllo there\n".encode("utf-8"))
        self.assertEqual(self.mail(self.alice), [("bob", "héllo there")])
        carol = self.connect()
        self.ask(carol, "register", "carol")
        self.assertEqual(self.mail(carol), [("bob", "héllo there")])

    def test_sendto_reaches_mailbox(self) -> None:
        self.bob.send(b"!sendto ALICE psst\n")
        self.assertEqual(self.bob.lines(), [])
        self.assertEqual(self.mail(self.alice), [("bob", "psst")])

    def test_poke_reaches_mailbox(self) -> None:
        self.bob.send(b"!poke Alice\n")
        self.assertEqual(self.bob.lines(), ["!poke bob alice"])
        self.assertEqual(self.mail(self.alice), [("bob", "!poke bob alice")])

    def test_line_nick_clashes_with_binary_name(self) -> None:
        client = self.connect()
        client.send(b"!nick ALICE\n")
        (reply,) = client.lines()
        self.assertTrue(reply.startswith("!error name-taken "), reply)

    def test_binary_message_reaches_line_user(self) -> None:
        self.ask(self.alice, "send", "BOB", "hi bob")
        self.ask(self.alice, "sendall", "hi all")
        self.assertEqual(self.bob.lines(), ["!privmsg alice hi bob", "!msg alice hi all"])
        self.assertEqual(self.mail(self.alice), [])
