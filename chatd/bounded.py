"""The transport a chat protocol writes to: a bounded backlog, and a close that cannot stall."""

from __future__ import annotations

from typing import Callable, Iterable, cast

from twisted.internet import tcp
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IPushProducer,
    IReactorTime,
    ITransport,
)
from twisted.logger import Logger
from zope.interface import implementer

from chatd import tally
from chatd.deadline import cancelled
from chatd.rules import Limits


@implementer(ITransport, IPushProducer)
class BoundedTransport:
    """Wraps a connection's transport for the protocol that speaks on it.

    It registers itself as the transport's streaming producer, so the
    transport says when its buffer is full (C{pauseProducing}) and when it
    has drained again (C{resumeProducing}). What is written in between is
    output the client has not read: past C{max_output_backlog} bytes the
    client is a slow reader and the connection is aborted.

    C{loseConnection} waits for the buffer to drain, which a peer that never
    reads can put off for ever, so it is followed by C{abortConnection} after
    C{close_grace} seconds.

    Whoever decides to end the connection says why with L{ending} first; the
    first reason given is the one logged and counted.

    On a plain TCP connection whose buffer is empty, a write is sent at once
    (see L{sender}); what is not sent at once, and everything written to any
    other transport, goes through the transport's buffer as usual.
    """

    log = Logger()
    # One per connection: no per-instance dict.
    __slots__ = (
        "transport", "clock", "limits", "backlog", "disconnecting", "reason",
        "_registered", "_abort", "_send_now",
    )

    def __init__(self, transport: ITransport, clock: IReactorTime, limits: Limits) -> None:
        self.transport = transport
        self.clock = clock
        self.limits = limits
        # Bytes written since the transport's buffer filled; None while it keeps up.
        self.backlog: int | None = None
        self.disconnecting = False
        # Why chatd ends the connection; None while it has no reason to.
        self.reason: str | None = None
        self._registered = True
        self._abort: IDelayedCall | None = None
        self._send_now = sender(transport)
        transport.registerProducer(self, True)

    # ITransport

    def write(self, data: bytes) -> None:
        # Once closing, the last words are written; the rest would only pile up.
        if self.disconnecting:
            return
        if self._send_now is not None:
            data = self._send_now(data)
            if not data:
                return
        self.transport.write(data)
        if self.backlog is not None:
            self.backlog += len(data)
            if self.backlog > self.limits.max_output_backlog:
                self.ending(tally.SLOW_READER, f"{self.backlog} bytes unread")
                self.abortConnection()

    def writeSequence(self, data: Iterable[bytes]) -> None:
        self.write(b"".join(data))

    def loseConnection(self) -> None:
        if self.disconnecting:
            return
        self.disconnecting = True
        # A transport holds its close open while a producer is registered.
        self._unregister()
        self.transport.loseConnection()
        self._abort = self.clock.callLater(self.limits.close_grace, self.abortConnection)

    def abortConnection(self) -> None:
        self.disconnecting = True
        self._cancel_abort()
        self._unregister()
        self.transport.abortConnection()  # type: ignore[attr-defined]

    def ending(self, reason: str, detail: str = "") -> None:
        """Note why chatd ends this connection, one of L{tally.REASONS}.

        Only the first reason counts: it is logged, once, with the peer and
        the limit it broke if it broke one.
        """
        if self.reason is not None:
            return
        self.reason = reason
        limit = tally.LIMITS.get(reason)
        if limit is None:
            self.log.info(
                "ending {peer}: {reason}{detail}",
                peer=self.getPeer(), reason=reason, detail=f" ({detail})" if detail else "",
            )
            return
        self.log.warn(
            "ending {peer}: {reason}{detail}, over --{option} {limit}",
            peer=self.getPeer(),
            reason=reason,
            detail=f", {detail}" if detail else "",
            option=limit.replace("_", "-"),
            limit=getattr(self.limits, limit),
        )

    def getPeer(self) -> IAddress:
        return self.transport.getPeer()

    def getHost(self) -> IAddress:
        return self.transport.getHost()

    def connectionLost(self) -> None:
        """The connection is gone: no abort is due, and nothing more is written."""
        self.disconnecting = True
        self._cancel_abort()

    # IPushProducer, as the transport's producer

    def pauseProducing(self) -> None:
        if self.backlog is None:
            self.backlog = 0

    def resumeProducing(self) -> None:
        self.backlog = None

    def stopProducing(self) -> None:
        # The transport is gone and has dropped its producer.
        self._registered = False

    def _cancel_abort(self) -> None:
        self._abort = cancelled(self._abort)

    def _unregister(self) -> None:
        if self._registered:
            self._registered = False
            self.transport.unregisterProducer()  # type: ignore[attr-defined]


def sender(transport: object) -> Callable[[bytes], bytes] | None:
    """For a plain TCP transport, a function that sends what it can at once
    and returns the rest; for any other transport, None.

    Twisted buffers every write and sends it when the socket says it is
    writable: for a one-frame reply that is a second reactor event and two
    C{epoll_ctl} calls, a quarter of the cost of a mailbox command. When the
    transport holds nothing unsent, sending at once cannot reorder anything.
    Its buffer is not public, so this looks for it and, where it is not as
    expected (another Twisted, TLS), leaves every write to the transport.
    """
    if type(transport) is not tcp.Server or getattr(transport, "TLS", True):
        return None
    if not all(hasattr(transport, name) for name in ("dataBuffer", "_tempDataLen", "socket")):
        return None
    server = cast(tcp.Server, transport)
    send = server.socket.send

    def send_now(data: bytes) -> bytes:
        if server.dataBuffer or server._tempDataLen or server.disconnecting:
            return data
        try:
            sent = send(data)
        except OSError:
            # A full socket buffer, or an error the transport will find itself.
            return data
        return data[sent:]

    return send_now
