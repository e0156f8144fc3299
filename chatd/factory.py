"""The factory every endpoint shares, and the first-byte choice of protocol."""

from __future__ import annotations

from collections import Counter
from typing import Protocol as TypingProtocol

from twisted.internet.defer import Deferred, succeed
from twisted.internet.address import UNIXAddress
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IAddress,
    IReactorTime,
    ISSLTransport,
    ITCPTransport,
    ITransport,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOProtocol
from twisted.python.failure import Failure

from chatd import tally
from chatd.binary import BinaryProtocol
from chatd.bounded import BoundedTransport
from chatd.deadline import Deadline
from chatd.flood import FakeLag, HostBudgets
from chatd.hub import Hub
from chatd.line import LineProtocol
from chatd.names import User
from chatd.rules import Ending

# A binary command frame opens with its little-endian length, 4 to 8; no
# text line opens with a control byte other than white space.
_TEXT_CONTROLS = frozenset(b"\t\n\r")


def is_binary_start(first: int) -> bool:
    """Whether a connection's first byte starts the binary protocol."""
    return first < 0x20 and first not in _TEXT_CONTROLS


def peer_host(transport: object) -> str:
    """The peer's host, the key under which a binary name may be claimed back."""
    peer = transport.getPeer()  # type: ignore[attr-defined]
    return str(getattr(peer, "host", None) or "local")


def transport_kind(transport: object) -> str:
    """How a connection reaches chatd: "tcp", "tls", "unix" or "websocket".

    A transport that knows says so in C{chatd_transport_kind}, as the
    WebSocket one does.
    """
    kind = getattr(transport, "chatd_transport_kind", None)
    if kind is not None:
        return str(kind)
    if ISSLTransport.providedBy(transport) or isinstance(transport, TLSMemoryBIOProtocol):
        return "tls"
    if isinstance(transport.getHost(), UNIXAddress):  # type: ignore[attr-defined]
        return "unix"
    return "tcp"


class Inner(TypingProtocol):
    """What a connection needs of the protocol it hands its bytes to.

    (Not the hub's L{chatd.delivery.Session}, which is what the hub needs of a
    connection it sends to.)
    """

    user: User | None
    idle_timeout: float | None
    lag: FakeLag
    # "line" or "binary": the label of its connections and commands.
    protocol_name: str

    def makeConnection(self, transport: ITransport) -> None: ...

    def dataReceived(self, data: bytes) -> None: ...

    def connectionLost(self, reason: Failure | None = None) -> None: ...

    def end(self, ending: Ending) -> None: ...


class Sniffer(Protocol):
    """One connection: counted in, timed, bounded, and handed on by its first byte."""

    def __init__(self, factory: ChatFactory) -> None:
        self.factory = factory
        self.inner: Inner | None = None
        self.host = "local"
        self.kind = "tcp"
        self.served = False
        self.greeted = False
        # The handshake's time limit, then the idle one.
        self.deadline = Deadline(factory.clock, self.timeoutConnection)

    def connectionMade(self) -> None:
        if ITCPTransport.providedBy(self.transport):
            # Replies are whole writes already; Nagle would only delay them.
            self.transport.setTcpNoDelay(True)
            # A quiet line user's half-open socket is found by keepalive.
            self.transport.setTcpKeepAlive(True)
        limits = self.factory.hub.limits
        self.bounded = BoundedTransport(self.transport, self.factory.clock, limits)
        self.host = peer_host(self.transport)
        self.kind = transport_kind(self.transport)
        self.served = self.factory.admit(self)
        if self.served:
            self.deadline.set(limits.handshake_timeout)
        elif self.factory.may_wait():
            # Turned away, but told so in its own protocol: wait a moment for
            # the first byte to learn which.
            self.deadline.set(limits.close_grace)
        else:
            self.end(Ending.SERVER_FULL)

    def dataReceived(self, data: bytes) -> None:
        if not data:
            return
        if self.inner is None:
            self._start(self.choose(data))
            if not self.served:
                self.end(Ending.SERVER_FULL)
                return
        assert self.inner is not None
        self.inner.dataReceived(data)
        if self.greeted:
            self.deadline.touch()
        else:
            self._check_greeted()

    def choose(self, data: bytes) -> Inner:
        """The protocol this connection speaks, from its first bytes."""
        return self.factory.protocolFor(data[0], self.host)

    def _check_greeted(self) -> bool:
        """Whether the handshake is over; once it is, the idle limit applies."""
        if not self.greeted and self.inner is not None and self.inner.user is not None:
            # A binary client may now be idle a while, a line user for ever.
            self.greeted = True
            self.deadline.set(self.inner.idle_timeout)
        return self.greeted

    def timeoutConnection(self) -> None:
        # A command parsed after its read (an unterminated line flushed by
        # the clock, one held by the flood limit) may have ended the
        # handshake without this connection seeing it.
        if self.served and not self.greeted and self._check_greeted():
            return
        if self.greeted and self.inner is not None and self._answered_late():
            return
        if self.served:
            self.bounded.ending(tally.IDLE_TIMEOUT if self.greeted else tally.HANDSHAKE_TIMEOUT)
        self.end(Ending.TIMEOUT if self.served else Ending.SERVER_FULL)

    def _answered_late(self) -> bool:
        """Whether the flood limit held the client's commands past its idle
        limit; if so, the limit starts over, from the last of them once run.

        A client whose commands wait, or were answered since its last read,
        is not idle: it is waiting for answers, or has just had them.
        """
        assert self.inner is not None
        lag, idle = self.inner.lag, self.inner.idle_timeout
        if lag.holding():
            self.deadline.set(idle)
            return True
        if idle is not None and lag.last_command + idle > self.factory.clock.seconds():
            self.deadline.set(idle, since=lag.last_command)
            return True
        return False

    def end(self, ending: Ending) -> None:
        """Close for a limit, told in the client's protocol: the line one if it said nothing."""
        self.deadline.cancel()
        if self.bounded.disconnecting:
            return
        self.bounded.ending(tally.ENDINGS[ending])
        if self.inner is None:
            self._start(self.factory.line_protocol(self.host))
        assert self.inner is not None
        self.inner.end(ending)

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.deadline.cancel()
        self.bounded.connectionLost()
        if self.inner is not None:
            self.inner.connectionLost(reason)
        self.factory.forget(self)
        self.factory.tally.closed[self._reason(reason)] += 1

    def _reason(self, lost: Failure | None) -> str:
        """Why the connection ended: chatd's reason, or else the client's doing."""
        if self.bounded.reason is not None:
            return self.bounded.reason
        if lost is None or lost.check(ConnectionDone):
            return tally.CLIENT_CLOSED
        return tally.ERROR

    def _start(self, inner: Inner) -> None:
        self.inner = inner
        inner.makeConnection(self.bounded)


class ChatFactory(Factory):
    """Builds every connection of one server on one L{Hub}, and counts them."""

    log = Logger()
    # One "Starting factory" line per endpoint says nothing useful.
    noisy = False

    def __init__(self, hub: Hub, clock: IReactorTime) -> None:
        self.hub = hub
        self.clock = clock
        self.tally = hub.tally
        # Set once the server is shutting down.
        self.stopping = False
        # Every open connection, and the served ones among them by peer host.
        self.connections: set[Sniffer] = set()
        self._served: Counter[str] = Counter()
        # Their sum, kept as they come and go: a storm of connections from
        # many hosts must not cost a walk over every host per accept.
        self._served_total = 0
        self._drained: list[Deferred[None]] = []
        limits = hub.limits
        # Kept here, not per connection: a host's broadcast budget outlives them.
        self.broadcasts = HostBudgets(limits.broadcast_rate, limits.broadcast_burst, clock)

    def buildProtocol(self, addr: IAddress) -> Protocol:
        return Sniffer(self)

    def protocolFor(self, first: int, host: str) -> Inner:
        if is_binary_start(first):
            return self.binary_protocol(host)
        return self.line_protocol(host)

    def binary_protocol(self, host: str) -> BinaryProtocol:
        return BinaryProtocol(self.hub, host, self.clock, self.broadcasts)

    def line_protocol(self, host: str) -> LineProtocol:
        return LineProtocol(self.hub, self.clock, self.broadcasts, host)

    # Counting connections

    def admit(self, connection: Sniffer) -> bool:
        """Count a new connection in; whether the limits leave room to serve it."""
        self.connections.add(connection)
        limits = self.hub.limits
        host = connection.host
        if self._served_total >= limits.max_connections:
            connection.bounded.ending(tally.SERVER_FULL)
            return False
        if self._served[host] >= limits.max_connections_per_host:
            connection.bounded.ending(tally.HOST_FULL)
            return False
        self._served[host] += 1
        self._served_total += 1
        return True

    def may_wait(self) -> bool:
        """Whether a turned-away connection may wait for its first byte.

        Those waiting are bounded too, so a connection storm cannot run the
        server out of file descriptors: past the bound, they are told in the
        line form at once.
        """
        waiting = len(self.connections) - self._served_total
        return waiting <= self.hub.limits.max_connections

    def forget(self, connection: Sniffer) -> None:
        self.connections.discard(connection)
        if connection.served:
            self._served[connection.host] -= 1
            self._served_total -= 1
            if not self._served[connection.host]:
                del self._served[connection.host]
        if not self.connections:
            drained, self._drained = self._drained, []
            for d in drained:
                d.callback(None)

    # Shutting down

    def shutdown(self) -> Deferred[None]:
        """End every connection, telling each client why.

        @return: fires once all are gone, which is within C{close_grace}: a
            connection that has not closed by then is aborted.
        """
        self.stopping = True
        for connection in list(self.connections):
            connection.end(Ending.SERVER_SHUTDOWN)
        if not self.connections:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._drained.append(d)
        return d

    # What the metrics read

    def connection_counts(self) -> Counter[tuple[str, str]]:
        """Open connections by protocol ("none" before the first byte) and transport kind."""
        return Counter(
            (c.inner.protocol_name if c.inner is not None else "none", c.kind)
            for c in self.connections
        )

    def online_binary_users(self) -> int:
        """Binary users that hold their name and have a connection."""
        return len({
            c.inner.user
            for c in self.connections
            if c.inner is not None
            and c.inner.protocol_name == "binary"
            and self.hub.is_current(c.inner.user)
        })
