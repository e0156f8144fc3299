"""A small WebSocket client for tests, on Twisted and wsproto: messages in, messages out.

Twisted's own client sends no C{Origin} and hands back whole messages
only; the tests need to send any header, to send a message in pieces,
and to stop reading.
"""

from __future__ import annotations

from typing import Callable, Union

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Message,
    Ping,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)

from tests.loopback import until_fired
from tests.support import parse_frames

PATIENCE = 5.0

Received = Union[str, bytes]


class Refused(Exception):
    """The server answered the handshake with an HTTP status, not an upgrade."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"HTTP {status}: {body!r}")
        self.status = status
        self.body = body


class WebSocketPeer(Protocol):
    """One client connection: keeps every whole message; waits for what it expects."""

    def __init__(self, path: str, host: str, origin: str | None) -> None:
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.path, self.host, self.origin = path, host, origin
        self.messages: list[Received] = []
        self.close_code: int | None = None
        self.open: Deferred[WebSocketPeer] = Deferred()
        self.gone: Deferred[None] = Deferred()
        self._parts: list[Received] = []
        self._refusal: tuple[int, bytearray] | None = None
        self._waits: list[tuple[Callable[[list[Received]], bool], Deferred[list[Received]]]] = []

    def connectionMade(self) -> None:
        headers = [] if self.origin is None else [(b"Origin", self.origin.encode())]
        self.transport.write(
            self.ws.send(Request(host=self.host, target=self.path, extra_headers=headers))
        )

    def dataReceived(self, data: bytes) -> None:
        self.ws.receive_data(data)
        for event in self.ws.events():
            if isinstance(event, AcceptConnection):
                self.open.callback(self)
            elif isinstance(event, RejectConnection):
                self._refusal = (event.status_code, bytearray())
                if not event.has_body:
                    self._refused()
            elif isinstance(event, RejectData):
                assert self._refusal is not None
                self._refusal[1].extend(event.data)
                if event.body_finished:
                    self._refused()
            elif isinstance(event, Message):
                self._parts.append(event.data)
                if event.message_finished:
                    parts, self._parts = self._parts, []
                    self._received(
                        "".join(parts) if isinstance(event, TextMessage) else b"".join(parts)
                    )
            elif isinstance(event, Ping):
                self.transport.write(self.ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                self.close_code = event.code
                try:
                    self.transport.write(self.ws.send(event.response()))
                except Exception:
                    pass
                self.transport.loseConnection()

    def _refused(self) -> None:
        assert self._refusal is not None
        status, body = self._refusal
        if not self.open.called:
            self.open.errback(Refused(status, bytes(body)))
        self.transport.loseConnection()

    def _received(self, message: Received) -> None:
        self.messages.append(message)
        for wait in list(self._waits):
            predicate, d = wait
            if predicate(self.messages):
                self._waits.remove(wait)
                d.callback(list(self.messages))

    def connectionLost(self, reason: Failure | None = None) -> None:
        if not self.open.called:
            self.open.errback(reason or Failure(ConnectionError("lost")))
        self.gone.callback(None)

    @property
    def closed(self) -> bool:
        return self.gone.called

    # Sending

    def text(self, text: str) -> None:
        self.transport.write(self.ws.send(TextMessage(text)))

    def binary(self, data: bytes, finished: bool = True) -> None:
        self.transport.write(self.ws.send(BytesMessage(data, message_finished=finished)))

    def raw(self, data: bytes) -> None:
        self.transport.write(data)

    # Waiting

    def until(
        self, predicate: Callable[[list[Received]], bool], timeout: float = PATIENCE
    ) -> Deferred[list[Received]]:
        """Fires with every message so far once C{predicate} holds of them."""
        d: Deferred[list[Received]] = Deferred()
        if predicate(self.messages):
            d.callback(list(self.messages))
            return d
        self._waits.append((predicate, d))
        return d.addTimeout(timeout, reactor)  # type: ignore[arg-type]

    def until_count(self, n: int, timeout: float = PATIENCE) -> Deferred[list[Received]]:
        return self.until(lambda got: len(got) >= n, timeout)

    def until_text(self, needle: str, timeout: float = PATIENCE) -> Deferred[list[Received]]:
        return self.until(
            lambda got: any(isinstance(m, str) and needle in m for m in got), timeout
        )

    def until_frames(self, n: int, timeout: float = PATIENCE) -> Deferred[list[Received]]:
        return self.until(lambda got: len(self.frames()) >= n, timeout)

    def until_gone(self, timeout: float = PATIENCE) -> Deferred[None]:
        return until_fired(self.gone, timeout)

    def take(self) -> list[Received]:
        messages, self.messages = self.messages, []
        return messages

    def frames(self) -> list[bytes]:
        """The binary messages so far, read as one stream of length-prefixed frames."""
        return parse_frames(b"".join(m for m in self.messages if isinstance(m, bytes)))


async def ws_connect(
    case: TestCase,
    port: int,
    origin: str | None = None,
    path: str = "/ws",
    host: str | None = None,
    source: str = "127.0.0.1",
    endpoint: IStreamClientEndpoint | None = None,
) -> WebSocketPeer:
    """A client connected to chatd's WebSocket on 127.0.0.1:C{port}, closed with the test."""
    if endpoint is None:
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port, bindAddress=(source, 0))
    peer = WebSocketPeer(path, host or f"127.0.0.1:{port}", origin)
    await connectProtocol(endpoint, peer)
    case.addCleanup(_abort, peer)
    await peer.open.addTimeout(PATIENCE, reactor)  # type: ignore[arg-type]
    return peer


def _abort(peer: WebSocketPeer) -> Deferred[None]:
    if not peer.closed and peer.transport is not None:
        peer.transport.abortConnection()  # type: ignore[attr-defined]
    return peer.gone
