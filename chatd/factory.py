"""The factory every endpoint shares, and the first-byte choice of protocol."""

from __future__ import annotations

from twisted.internet.interfaces import IAddress, IReactorTime, ITCPTransport
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from chatd.binary import BinaryProtocol
from chatd.hub import Hub
from chatd.line import LineProtocol

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


class Sniffer(Protocol):
    """Waits for a connection's first byte, then hands it to the right protocol."""

    def __init__(self, factory: ChatFactory) -> None:
        self.factory = factory
        self.inner: Protocol | None = None

    def connectionMade(self) -> None:
        if ITCPTransport.providedBy(self.transport):
            # Replies are whole writes already; Nagle would only delay them.
            self.transport.setTcpNoDelay(True)

    def dataReceived(self, data: bytes) -> None:
        if not data:
            return
        if self.inner is None:
            self.inner = self.factory.protocolFor(data[0], self.transport)
            self.inner.makeConnection(self.transport)
        self.inner.dataReceived(data)

    def connectionLost(self, reason: Failure | None = None) -> None:
        if self.inner is not None:
            self.inner.connectionLost(reason)


class ChatFactory(Factory):
    """Builds every connection of one server on one L{Hub}."""

    log = Logger()
    # One "Starting factory" line per endpoint says nothing useful.
    noisy = False

    def __init__(self, hub: Hub, clock: IReactorTime) -> None:
        self.hub = hub
        self.clock = clock

    def buildProtocol(self, addr: IAddress) -> Protocol:
        return Sniffer(self)

    def protocolFor(self, first: int, transport: object) -> Protocol:
        if is_binary_start(first):
            return BinaryProtocol(self.hub, peer_host(transport))
        return LineProtocol(self.hub, self.clock)
