"""A Twisted client for the binary protocol: each command returns a Deferred reply."""

from __future__ import annotations

from collections import deque

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.endpoints import HostnameEndpoint, connectProtocol
from twisted.internet.interfaces import IReactorTCP, IReactorTime
from twisted.logger import Logger
from twisted.protocols.basic import IntNStringReceiver
from twisted.python.failure import Failure

from chatd import binwire
from chatd.client import commands
from chatd.client.commands import Command, Message, Reader, T, Text
from chatd.client.errors import ChatdError, Disconnected, ProtocolError

# ASVT-chat's port, one of the two chatd listens on by default.
DEFAULT_PORT = 31337


class BinaryClientProtocol(IntNStringReceiver):
    """One connection to a binary-protocol server.

    Commands may be sent without waiting for replies: they queue, and the
    server answers them in order. A refused command's Deferred fails with
    the L{ChatdError} for the server's reply; since the server then hangs
    up (but for L{NoSuchUser}), commands after it fail with L{Disconnected}.
    """

    log = Logger()
    structFormat = "<I"
    prefixLength = binwire.PREFIX_LENGTH
    MAX_LENGTH = commands.MAX_FRAME_LENGTH

    def __init__(self) -> None:
        self._pending: deque[tuple[Reader[object], Deferred[object]]] = deque()
        self._lost = False
        self._waiting_close: list[Deferred[None]] = []

    # Commands

    def register(self, name: Text) -> Deferred[str]:
        return self.call(commands.register(name))

    def users(self) -> Deferred[list[str]]:
        return self.call(commands.users())

    def send(self, receiver: Text, text: Text) -> Deferred[None]:
        return self.call(commands.send(receiver, text))

    def sendall(self, text: Text) -> Deferred[None]:
        return self.call(commands.sendall(text))

    def receive(self) -> Deferred[list[Message]]:
        return self.call(commands.receive())

    def logout(self) -> Deferred[None]:
        return self.call(commands.logout())

    def call(self, command: Command[T]) -> Deferred[T]:
        """Send C{command}; the Deferred fires with its parsed reply."""
        if self._lost or self.transport is None:
            return fail(Disconnected("not connected"))
        d: Deferred[T] = Deferred()
        self._pending.append((command.reader(), d))  # type: ignore[arg-type]
        self.transport.write(command.data)
        return d

    def close(self) -> Deferred[None]:
        """Hang up; commands still waiting fail with L{Disconnected}.

        @return: fires once the connection is closed.
        """
        if self.transport is None:
            return succeed(None)
        closed = self.when_closed()
        self.transport.loseConnection()
        return closed

    def when_closed(self) -> Deferred[None]:
        """A Deferred that fires once the connection is closed, by either side."""
        if self._lost:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._waiting_close.append(d)
        return d

    # Framing

    def stringReceived(self, frame: bytes) -> None:
        if not self._pending:
            self._give_up(f"a frame nobody asked for: {frame[:40]!r}")
            return
        reader, d = self._pending[0]
        try:
            done = commands.feed(reader, frame)
        except ProtocolError as e:
            self._pending.popleft()
            d.errback(e)
            self._give_up(str(e))
        except ChatdError as e:
            self._pending.popleft()
            d.errback(e)
        else:
            if done is not None:
                self._pending.popleft()
                d.callback(done.value)

    def lengthLimitExceeded(self, length: int) -> None:
        self._give_up(f"a frame of {length} bytes")

    def connectionLost(self, reason: Failure | None = None) -> None:
        self._lost = True
        pending, self._pending = self._pending, deque()
        for _, d in pending:
            d.errback(Disconnected("the server closed the connection"))
        waiting, self._waiting_close = self._waiting_close, []
        for closed in waiting:
            closed.callback(None)

    def _give_up(self, why: str) -> None:
        self.log.error("not a chatd server: {why}", why=why)
        self.transport.loseConnection()


def connect(
    reactor: IReactorTCP | IReactorTime,
    host: str = "localhost",
    port: int = DEFAULT_PORT,
) -> Deferred[BinaryClientProtocol]:
    """Connect to the binary protocol of the server at C{host}:C{port}."""
    endpoint = HostnameEndpoint(reactor, host, port)
    return connectProtocol(endpoint, BinaryClientProtocol())
