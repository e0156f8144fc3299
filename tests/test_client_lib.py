"""The binary-protocol client library, both APIs, against a real chatd on loopback."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.testing import StringTransport
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase

from chatd import binwire
from chatd.client import (
    BinaryClientProtocol,
    BlockingClient,
    Message,
    commands,
    connect,
    errors,
    line,
)
from tests.live import LiveServer
from tests.support import command, frame

# The mixin's tests use TestCase's assertions; only its subclasses are TestCases.
if TYPE_CHECKING:
    _Base = TestCase
else:
    _Base = object


class _Commands(_Base):
    """Every command and every refusal; subclasses say how a client is driven."""

    server: LiveServer

    # What a subclass provides

    async def open(self) -> Any:
        """A new client connected to C{self.server}."""
        raise NotImplementedError()

    async def do(self, client: Any, name: str, *args: object) -> Any:
        """Run one command of C{client} and return its reply."""
        raise NotImplementedError()

    # Helpers

    async def setUp(self) -> None:
        self.server = await LiveServer.start(self)

    async def registered(self, name: str) -> Any:
        client = await self.open()
        await self.do(client, "register", name)
        return client

    async def refused(
        self, error: type[errors.ChatdError], client: Any, name: str, *args: object
    ) -> errors.ChatdError:
        """Run a command that the server refuses, and return the error."""
        try:
            await self.do(client, name, *args)
        except errors.ChatdError as e:
            self.assertIsInstance(e, error)
            return e
        raise AssertionError(f"{name}{args} was not refused")

    async def refused_and_closed(
        self, error: type[errors.ChatdError], text: str, client: Any, name: str, *args: object
    ) -> None:
        """A refusal with the server's C{text}, after which the connection is gone."""
        e = await self.refused(error, client, name, *args)
        self.assertEqual(str(e), text)
        self.assertTrue(e.closes)
        await self.refused(errors.Disconnected, client, "users")

    # Commands

    async def test_register(self) -> None:
        client = await self.open()
        self.assertEqual(await self.do(client, "register", "alice"), "Hello, alice")

    async def test_register_again(self) -> None:
        """A name registered from this host is claimed back, on any connection."""
        client = await self.registered("alice")
        again = "Nice to see you, alice"
        self.assertEqual(await self.do(client, "register", "alice"), again)
        other = await self.open()
        self.assertEqual(await self.do(other, "register", "alice"), again)

    async def test_users(self) -> None:
        client = await self.open()
        self.assertEqual(await self.do(client, "users"), [])
        await self.registered("alice")
        await self.registered("bob")
        self.assertEqual(await self.do(client, "users"), ["alice", "bob"])

    async def test_send_and_receive(self) -> None:
        alice = await self.registered("alice")
        bob = await self.registered("bob")
        self.assertIsNone(await self.do(alice, "send", "bob", "hi bob"))
        self.assertIsNone(await self.do(alice, "send", "BOB", "é, 1/2"))
        self.assertEqual(
            await self.do(bob, "receive"),
            [Message("alice", "hi bob"), Message("alice", "é, 1/2")],
        )
        self.assertEqual(await self.do(bob, "receive"), [])

    async def test_sendall(self) -> None:
        alice = await self.registered("alice")
        bob = await self.registered("bob")
        carol = await self.registered("carol")
        self.assertIsNone(await self.do(alice, "sendall", "hi all"))
        for client in (bob, carol):
            self.assertEqual(await self.do(client, "receive"), [("alice", "hi all")])
        self.assertEqual(await self.do(alice, "receive"), [])

    async def test_logout(self) -> None:
        client = await self.open()
        self.assertIsNone(await self.do(client, "logout"))
        await self.do(client, "register", "alice")
        self.assertIsNone(await self.do(client, "logout"))
        self.assertEqual(await self.do(client, "users"), [])

    # Refusals

    async def test_not_registered(self) -> None:
        for name, args in [("send", ("bob", "hi")), ("sendall", ("hi",)), ("receive", ())]:
            client = await self.open()
            await self.refused_and_closed(
                errors.NotRegistered, binwire.NOT_REGISTERED, client, name, *args
            )

    async def test_bad_name(self) -> None:
        for name, text in [
            ("", binwire.BAD_LOGIN),
            ("a b", binwire.BAD_LOGIN),
            (b"\xff", binwire.CANT_DECODE_LOGIN),
        ]:
            client = await self.open()
            await self.refused_and_closed(errors.BadName, text, client, "register", name)

    async def test_name_too_long(self) -> None:
        client = await self.open()
        await self.refused_and_closed(
            errors.NameTooLong, "Login is too long!", client, "register", "ninechars"
        )

    async def test_name_taken(self) -> None:
        """A line user holds the name; case does not tell names apart."""
        carol = await line.connect(
            reactor, "127.0.0.1", self.server.port, lambda _: None, lambda _: None
        )
        self.addCleanup(carol.transport.loseConnection)
        await carol.take_nick("carol")
        client = await self.open()
        await self.refused_and_closed(
            errors.NameTaken, "'CAROL' already exists!", client, "register", "CAROL"
        )

    async def test_already_registered(self) -> None:
        client = await self.registered("alice")
        text = "Already registered as 'alice'!"
        await self.refused_and_closed(errors.AlreadyRegistered, text, client, "register", "bob")

    async def test_no_such_user(self) -> None:
        """The one refusal after which the connection stays open."""
        client = await self.registered("alice")
        e = await self.refused(errors.NoSuchUser, client, "send", "nobody", "hi")
        self.assertEqual(str(e), "User 'nobody' doesn't exist!")
        self.assertFalse(e.closes)
        self.assertEqual(await self.do(client, "users"), ["alice"])

    async def test_message_too_long(self) -> None:
        text = "Massage is too long! Max length = 60!"
        for name, args in [("sendall", ("x" * 61,)), ("send", ("alice", "x" * 61))]:
            client = await self.registered("alice")
            await self.refused_and_closed(errors.MessageTooLong, text, client, name, *args)

    async def test_bad_message(self) -> None:
        for text in ["", "tab\there", b"\xff"]:
            client = await self.registered("alice")
            await self.refused_and_closed(
                errors.BadMessage, binwire.BAD_MESSAGE, client, "sendall", text
            )

    async def test_unknown_command(self) -> None:
        client = await self.open()
        await self.refused_and_closed(
            errors.UnknownCommand, binwire.UNKNOWN_COMMAND, client, "call", commands.raw("shout")
        )

    async def test_frame_too_long(self) -> None:
        client = await self.open()
        await self.refused_and_closed(
            errors.FrameTooLong, binwire.FRAME_TOO_LONG, client, "register", "x" * 2000
        )

    async def test_server_goes_away(self) -> None:
        client = await self.registered("alice")
        await self.server.go_away()
        await self.refused(errors.Disconnected, client, "users")


class TwistedAPITests(_Commands, TestCase):
    """L{connect} and L{BinaryClientProtocol}: each command's reply is a Deferred."""

    async def open(self) -> BinaryClientProtocol:
        client = await connect(reactor, "127.0.0.1", self.server.port)
        self.addCleanup(client.close)
        return client

    async def do(self, client: Any, name: str, *args: object) -> Any:
        return await getattr(client, name)(*args)

    async def test_pipelined(self) -> None:
        """Commands sent without waiting are answered in order."""
        client = await self.open()
        replies: list[Deferred[Any]] = [
            client.register("alice"),
            client.users(),
            client.send("alice", "to me"),
            client.receive(),
            client.logout(),
        ]
        results = [await d for d in replies]
        self.assertEqual(results, ["Hello, alice", ["alice"], None, [("alice", "to me")], None])

    async def test_pending_when_closed(self) -> None:
        """Commands waiting for their reply fail when the connection closes."""
        client = await self.open()
        users = client.users()
        await client.close()
        await self.refused(errors.Disconnected, client, "users")
        self.failureResultOf(users, errors.Disconnected)


class BlockingAPITests(_Commands, TestCase):
    """L{BlockingClient}, run in a thread so the server keeps running."""

    async def open(self) -> BlockingClient:
        client = await deferToThread(BlockingClient, "127.0.0.1", self.server.port)
        self.addCleanup(client.close)
        return client

    async def do(self, client: Any, name: str, *args: object) -> Any:
        return await deferToThread(getattr(client, name), *args)

    async def test_context_manager(self) -> None:
        def chat() -> list[str]:
            with BlockingClient("127.0.0.1", self.server.port) as client:
                client.register("alice")
                return client.users()

        self.assertEqual(await deferToThread(chat), ["alice"])


class ProtocolErrorTests(SynchronousTestCase):
    """A peer that is not a chatd: the client says so and hangs up."""

    def setUp(self) -> None:
        self.client = BinaryClientProtocol()
        self.transport = StringTransport()
        self.client.makeConnection(self.transport)

    def test_unasked_frame(self) -> None:
        self.client.dataReceived(frame(b"surprise"))
        self.assertTrue(self.transport.disconnecting)

    def test_bad_count(self) -> None:
        users = self.client.users()
        self.assertEqual(self.transport.value(), command(b"users"))
        self.client.dataReceived(frame(b"many"))
        self.assertIsInstance(
            self.failureResultOf(users, errors.ProtocolError).value, errors.ChatdError
        )
        self.assertTrue(self.transport.disconnecting)

    def test_unexpected_reply(self) -> None:
        sent: Deferred[None] = self.client.sendall("hi")
        self.client.dataReceived(frame(b"What?"))
        self.failureResultOf(sent, errors.ProtocolError)
        self.assertTrue(self.transport.disconnecting)

    def test_frame_too_long(self) -> None:
        self.client.users()
        self.client.dataReceived(b"\xff\xff\xff\x7f")
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(len(self.flushLoggedErrors()), 0)

    def test_error_texts(self) -> None:
        """Every refusal the server can send maps to its own exception."""
        cases = {
            binwire.NOT_REGISTERED: errors.NotRegistered,
            binwire.CANT_DECODE_LOGIN: errors.BadName,
            binwire.BAD_LOGIN: errors.BadName,
            binwire.LOGIN_TOO_LONG: errors.NameTooLong,
            binwire.exists("Bob"): errors.NameTaken,
            binwire.too_long(60): errors.MessageTooLong,
            binwire.already_registered("bob"): errors.AlreadyRegistered,
            binwire.no_such_user("bob"): errors.NoSuchUser,
            binwire.BAD_MESSAGE: errors.BadMessage,
            binwire.UNKNOWN_COMMAND: errors.UnknownCommand,
            binwire.FRAME_TOO_LONG: errors.FrameTooLong,
        }
        for text, kind in cases.items():
            error = commands.error_for(text)
            self.assertEqual((type(error), str(error)), (kind, text))
        for text in [binwire.ADDED, binwire.hello("x"), "3", "Users 'x' doesn't exist!"]:
            self.assertIsNone(commands.error_for(text))
