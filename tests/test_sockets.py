"""chatd on real sockets, spoken to by clients that behave exactly as the seed clients.

The server runs in this process on the reactor; each scenario's blocking
clients run in a thread.
"""

from __future__ import annotations

import shutil
import tempfile

from twisted.internet import reactor
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Protocol
from twisted.internet.threads import deferToThread
from twisted.protocols.policies import WrappingFactory
from twisted.trial.unittest import TestCase

from chatd.factory import ChatFactory
from chatd.hub import Hub
from chatd.rules import Limits
from tests.clients import (
    ADDED,
    LOGGED_OUT,
    TIMEOUT,
    Address,
    ASVTClient,
    PyChatClient,
    chat_across_protocols,
)

# Short, so PyChat-style commands, which never end their line, are quick.
LINE_FLUSH = 0.05


class _Connections(WrappingFactory):
    """The server's open connections, so a test can wait until all are closed."""

    def __init__(self, wrapped: ChatFactory) -> None:
        super().__init__(wrapped)
        self._waiting: list[Deferred[None]] = []

    def unregisterProtocol(self, p: Protocol) -> None:
        super().unregisterProtocol(p)
        if not self.protocols:
            waiting, self._waiting = self._waiting, []
            for d in waiting:
                d.callback(None)

    def allClosed(self) -> Deferred[None]:
        if not self.protocols:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._waiting.append(d)
        return d.addTimeout(TIMEOUT, reactor)


class SocketTests(TestCase):
    timeout = 30

    async def serve(self, description: str) -> IListeningPort:
        """A fresh chatd on C{description}; the test ends once its clients are gone."""
        connections = _Connections(ChatFactory(
            Hub(Limits(line_flush=LINE_FLUSH), clock=reactor), reactor  # type: ignore[arg-type]
        ))
        port = await serverFromString(reactor, description).listen(connections)
        self.addCleanup(port.stopListening)
        self.addCleanup(connections.allClosed)
        return port

    async def tcp(self) -> Address:
        host = (await self.serve("tcp:0:interface=127.0.0.1")).getHost()
        return (host.host, host.port)

    async def unix(self) -> Address:
        directory = tempfile.mkdtemp(prefix="chatd-")
        self.addCleanup(shutil.rmtree, directory, True)
        path = f"{directory}/chatd.sock"
        await self.serve(f"unix:{path}")
        return path

    async def test_line_and_binary_users_chat_over_tcp(self) -> None:
        address = await self.tcp()
        await deferToThread(chat_across_protocols, self, address, address)

    async def test_one_unix_endpoint_serves_both_protocols(self) -> None:
        address = await self.unix()
        await deferToThread(chat_across_protocols, self, address, address)

    async def test_two_line_users(self) -> None:
        await deferToThread(self.two_line_users, await self.tcp())

    def two_line_users(self, address: Address) -> None:
        with PyChatClient(address) as alice:
            self.assertEqual(alice.nick("alice"), ["!users 1 alice"])
            with PyChatClient(address) as carol:
                self.assertEqual(carol.nick("carol"), ["!users 2 alice carol"])
                self.assertEqual(alice.lines(1), ["!joined carol"])
                alice.send("!sendmsg hello carol")
                self.assertEqual(carol.lines(1), ["!msg alice hello carol"])
                carol.send("!sendmsg hi alice")
                self.assertEqual(alice.lines(1), ["!msg carol hi alice"])
            # PyChat's client leaves by closing its socket.
            self.assertEqual(alice.lines(1), ["!left carol"])

    async def test_binary_user_session(self) -> None:
        await deferToThread(self.binary_user_session, await self.tcp())

    def binary_user_session(self, address: Address) -> None:
        with ASVTClient(address) as dave, ASVTClient(address) as erin:
            self.assertEqual(dave.register("dave"), "Hello, dave")
            self.assertEqual(erin.register("erin"), "Hello, erin")
            self.assertEqual(dave.users(), ["dave", "erin"])
            self.assertEqual(dave.send("erin", "hi erin"), ADDED)
            self.assertEqual(dave.send("nobody", "hi"), "User 'nobody' doesn't exist!")
            self.assertEqual(dave.sendall("hi all"), ADDED)
            self.assertEqual(erin.receive(), [("dave", "hi erin"), ("dave", "hi all")])
            self.assertEqual(erin.receive(), [])
            self.assertEqual(dave.logout(), LOGGED_OUT)
            self.assertEqual(erin.users(), ["erin"])

    async def test_name_claimed_again_from_the_same_host(self) -> None:
        await deferToThread(self.name_claimed_again, await self.tcp())

    def name_claimed_again(self, address: Address) -> None:
        with PyChatClient(address) as alice:
            self.assertEqual(alice.nick("alice"), ["!users 1 alice"])
            with ASVTClient(address) as first:
                self.assertEqual(first.register("frank"), "Hello, frank")
                self.assertEqual(alice.lines(1), ["!joined frank"])
            # Offline without logout: frank stays a user, and gets mail.
            alice.send("!sendto frank are you there")
            with ASVTClient(address) as again:
                self.assertEqual(again.register("frank"), "Nice to see you, frank")
                self.assertEqual(again.users(), ["alice", "frank"])
                self.assertEqual(again.receive_until(1), [("alice", "are you there")])
