"""Writes sent at once on a plain TCP connection keep their order and lose nothing."""

from __future__ import annotations

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol, serverFromString
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase, TestCase

from chatd.bounded import BoundedTransport, sender
from chatd.rules import Limits
from tests.loopback import Peer


class Accepted(Protocol):
    """The server's side of a connection: hands its transport to the test."""

    def __init__(self, ready: Deferred[Accepted]) -> None:
        self.ready = ready

    def connectionMade(self) -> None:
        self.ready.callback(self)


class SenderTests(SynchronousTestCase):
    def test_only_plain_tcp(self) -> None:
        self.assertIsNone(sender(StringTransport()))


class SendNowTests(TestCase):
    async def connect(self) -> tuple[BoundedTransport, Peer]:
        ready: Deferred[Accepted] = Deferred()
        port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(
            Factory.forProtocol(lambda: Accepted(ready))
        )
        self.addCleanup(port.stopListening)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)
        peer = await connectProtocol(endpoint, Peer())
        accepted = await ready
        assert accepted.transport is not None
        self.assertIsNotNone(sender(accepted.transport))
        bounded = BoundedTransport(accepted.transport, Clock(), Limits())

        def close() -> Deferred[None]:
            bounded.abortConnection()
            return peer.gone

        self.addCleanup(close)
        return bounded, peer

    async def test_small_write_sent_at_once(self) -> None:
        bounded, peer = await self.connect()
        bounded.write(b"hello")
        # Nothing was left for the reactor to send.
        self.assertEqual(bounded.transport.dataBuffer, b"")  # type: ignore[attr-defined]
        self.assertEqual(await peer.until_received(b"hello"), b"hello")

    async def test_order_kept_behind_what_is_buffered(self) -> None:
        """A write larger than the socket takes at once leaves a rest in the
        transport's buffer; what comes after waits behind it."""
        bounded, peer = await self.connect()
        # More than one send takes (Twisted sends at most 128 KiB at a time),
        # less than the output bound.
        big = bytes(range(256)) * 3_000
        bounded.write(big)
        bounded.write(b"after")
        bounded.write(b"and last")
        expected = big + b"afterand last"
        received = await peer.until(lambda data: len(data) >= len(expected), timeout=30)
        self.assertEqual(received, expected)
