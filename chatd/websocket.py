"""Both chat protocols over WebSocket (PROTOCOL.md section 6): the socket at C{/ws}.

Each WebSocket connection is a transport for a L{Sniffer}, so every rule
and limit of the TCP path holds: the connection is counted against its
real peer host, timed, flood-limited and its unread output bounded by the
same L{BoundedTransport}.

Twisted's C{twisted.web.websocket} upgrades a request the same way, but
its protocol buffers each whole message without a bound before handing
it on, and registers a producer on a transport that the HTTP channel
already produces for. So chatd does the handshake with C{wsproto} (the
C{websocket} extra of Twisted) itself, streams each message's bytes into
the protocol as they arrive, where the line and frame limits apply as on
TCP, and takes the upgraded connection over with the HTTP channel's own
hook for it.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Iterable
from urllib.parse import urlsplit

from twisted.internet.interfaces import IAddress, IPushProducer, ITCPTransport, ITransport
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request
from wsproto import ConnectionType
from wsproto.connection import Connection, ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    TextMessage,
)
from wsproto.handshake import H11Handshake
from wsproto.utilities import LocalProtocolError, RemoteProtocolError
from zope.interface import implementer

from chatd.bounded import sender
from chatd.factory import Inner, Sniffer

if TYPE_CHECKING:
    from chatd.factory import ChatFactory

_TEXT, _BINARY = 0x1, 0x2
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def frame(opcode: int, payload: bytes) -> bytes:
    """One final, unmasked WebSocket frame, as a server sends it (RFC 6455 5.2)."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, n))
    elif n < 0x10000:
        head = struct.pack("!BBH", 0x80 | opcode, 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 127, n)
    return head + payload


# The last lines framed and their frames: a broadcast hands every session
# the same bytes, so one recipient's framing serves them all.
_last_text: tuple[bytes, bytes] = (b"", b"")


def text_frames(data: bytes) -> bytes:
    """Lines of the line protocol as text messages, one a line, without its LF."""
    global _last_text
    if data is _last_text[0]:
        return _last_text[1]
    lines = data.split(b"\n")
    if not lines[-1]:
        lines.pop()
    framed = b"".join([frame(_TEXT, line) for line in lines])
    _last_text = (data, framed)
    return framed


class MessageSniffer(Sniffer):
    """A WebSocket connection's L{Sniffer}: the first message's kind picks the protocol."""

    def __init__(self, factory: ChatFactory, connection: WebSocketConnection) -> None:
        super().__init__(factory)
        self.connection = connection

    def choose(self, data: bytes) -> Inner:
        if self.connection.binary:
            binary = self.factory.binary_protocol(self.host)
            binary.whole_replies = True
            return binary
        line = self.factory.line_protocol(self.host)
        line.ends_every_line()
        return line


@implementer(ITransport, IPushProducer)
class WebSocketConnection:
    """One upgraded connection: WebSocket messages in and out, bytes to and from chatd.

    To the HTTP channel it is the protocol of the connection; to the chat
    protocol behind its L{MessageSniffer}, the transport.
    """

    # Read by chatd's metrics to label the connection.
    chatd_transport_kind = "websocket"

    def __init__(self, factory: ChatFactory, ws: Connection, request: Request) -> None:
        self.ws = ws
        self.channel = request.channel
        self.tcp: ITransport = request.channel.transport
        # Whether the first message was binary: the binary protocol, and binary replies.
        self.binary = False
        self.disconnecting = False
        self._producer: IPushProducer | None = None
        self._paused = False
        # Whether the text message being received so far ends a line.
        self._ended = True
        self._send_now = sender(self.tcp)
        self.sniffer = MessageSniffer(factory, self)

    # The upgraded connection, as the HTTP channel's protocol

    def makeConnection(self, transport: ITransport) -> None:
        if ITCPTransport.providedBy(transport):
            # As on chatd's own ports: whole replies, and half-open sockets found.
            transport.setTcpNoDelay(True)
            transport.setTcpKeepAlive(True)
        self.sniffer.makeConnection(self)

    def dataReceived(self, data: bytes) -> None:
        if self.disconnecting:
            return
        ws = self.ws
        try:
            ws.receive_data(data)
        except LocalProtocolError:
            # Bytes after the close handshake: nothing more is read.
            self.abortConnection()
            return
        for event in ws.events():
            if isinstance(event, TextMessage):
                self._text(event.data, event.message_finished)
            elif isinstance(event, BytesMessage):
                self._bytes(bytes(event.data))
            elif isinstance(event, Ping):
                # Answered unless the client is not reading: pongs count
                # against no bound, so a non-reader gets none.
                if not self._paused:
                    self._control(event.response())
            elif isinstance(event, CloseConnection):
                self._control(event.response())
                self.disconnecting = True
                self.tcp.loseConnection()

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.disconnecting = True
        self.sniffer.connectionLost(reason)

    def _text(self, text: str, finished: bool) -> None:
        if self.disconnecting:
            return
        data = text.encode("utf-8")
        if data:
            self._ended = data.endswith(b"\n")
        if finished:
            # The end of a message ends its line; the line-flush timer never applies.
            if not self._ended:
                data += b"\n"
            self._ended = True
        if data:
            self.sniffer.dataReceived(data)

    def _bytes(self, data: bytes) -> None:
        if self.disconnecting or not data:
            return
        if self.sniffer.inner is None:
            self.binary = True
        self.sniffer.dataReceived(data)

    def _control(self, event: Ping | CloseConnection) -> None:
        if self.ws.state in (ConnectionState.CLOSED, ConnectionState.REJECTING):
            return
        try:
            self._send(self.ws.send(event))
        except LocalProtocolError:
            pass

    # ITransport, for the chat protocol

    def write(self, data: bytes) -> None:
        if self.disconnecting:
            return
        self._send(frame(_BINARY, data) if self.binary else text_frames(data))

    def writeSequence(self, data: Iterable[bytes]) -> None:
        self.write(b"".join(data))

    def _send(self, framed: bytes) -> None:
        if self._send_now is not None:
            framed = self._send_now(framed)
            if not framed:
                return
        self.tcp.write(framed)

    def loseConnection(self) -> None:
        if self.disconnecting:
            return
        if self.ws.state is ConnectionState.OPEN:
            self._control(CloseConnection(1000))
        self.disconnecting = True
        self.tcp.loseConnection()

    def abortConnection(self) -> None:
        self.disconnecting = True
        self.tcp.abortConnection()  # type: ignore[attr-defined]

    def getPeer(self) -> IAddress:
        # The TCP peer: limits are kept per real host, never per forwarded header.
        return self.tcp.getPeer()

    def getHost(self) -> IAddress:
        return self.tcp.getHost()

    def registerProducer(self, producer: IPushProducer, streaming: bool) -> None:
        # The HTTP channel is the TCP transport's producer and passes its
        # pauses on to the one registered with it.
        self._producer = producer
        self.channel.registerProducer(self, True)

    def unregisterProducer(self) -> None:
        self._producer = None
        self.channel.unregisterProducer()

    # IPushProducer, as the channel's producer

    def pauseProducing(self) -> None:
        self._paused = True
        if self._producer is not None:
            self._producer.pauseProducing()

    def resumeProducing(self) -> None:
        self._paused = False
        if self._producer is not None:
            self._producer.resumeProducing()

    def stopProducing(self) -> None:
        if self._producer is not None:
            self._producer.stopProducing()


def _origin_key(scheme: str, host: str, port: int | None) -> tuple[str, int | None]:
    """Host and port as compared: the scheme's default port counts as none given."""
    if port is not None and port == _DEFAULT_PORTS.get(scheme):
        port = None
    return host.lower(), port


def parse_origin(origin: str) -> tuple[str, str, int | None]:
    """C{scheme://host[:port]} as scheme, host and port; ValueError if it is not one."""
    parts = urlsplit(origin.strip())
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname or parts.path not in ("", "/"):
        raise ValueError(f"not an origin (scheme://host[:port]): {origin!r}")
    return parts.scheme, parts.hostname, parts.port


def same_origin(origin: str, host_header: str) -> bool:
    """Whether C{origin} names the host and port of a request's C{Host} header."""
    try:
        scheme, host, port = parse_origin(origin)
        requested = urlsplit("//" + host_header.strip())
        requested_host, requested_port = requested.hostname, requested.port
    except ValueError:
        return False
    if not requested_host:
        return False
    return _origin_key(scheme, host, port) == _origin_key(scheme, requested_host, requested_port)


class ChatSocket(Resource):
    """The WebSocket at C{/ws}: checks the origin, upgrades, hands the connection to chatd."""

    isLeaf = True
    log = Logger()

    def __init__(self, factory: ChatFactory, origins: Iterable[str] = ()) -> None:
        super().__init__()
        self.factory = factory
        self.origins = {self._key(o) for o in origins}

    @staticmethod
    def _key(origin: str) -> tuple[str, str, int | None]:
        scheme, host, port = parse_origin(origin)
        return (scheme, *_origin_key(scheme, host, port))

    def allowed(self, origin: str | None, host_header: str | None) -> bool:
        """Whether a handshake with this C{Origin} may open the socket.

        A page from another site could otherwise open a socket to chatd from
        the browser of anyone who visits it (cross-site WebSocket hijacking).
        A request without C{Origin} comes from no browser page, and is let in.
        """
        if origin is None:
            return True
        if host_header is not None and same_origin(origin, host_header):
            return True
        try:
            return self._key(origin) in self.origins
        except ValueError:
            return False

    def render_GET(self, request: Request) -> bytes | int:
        origin = _header(request, b"origin")
        if not self.allowed(origin, _header(request, b"host")):
            self.log.warn(
                "refused a WebSocket from {peer}: origin {origin} not allowed",
                peer=request.getClientAddress(),
                origin=origin,
            )
            return _plain(request, 403, f"origin {origin} may not open this socket\n")
        handshake = H11Handshake(ConnectionType.SERVER)
        headers = [
            (name, value)
            for name, values in request.requestHeaders.getAllRawHeaders()
            for value in values
        ]
        try:
            handshake.initiate_upgrade_connection(headers, request.uri)
        except RemoteProtocolError as e:
            return _plain(request, 400, f"not a WebSocket handshake: {e}\n")
        accept = handshake.send(AcceptConnection())
        assert handshake.connection is not None
        connection = WebSocketConnection(self.factory, handshake.connection, request)
        request.channel.transport.write(accept)
        # From here the chat factory counts it, against the same limits.
        site = request.site
        if hasattr(site, "upgraded"):
            site.upgraded(request.channel)
        # The channel hands every later byte, and its loss, to the connection.
        request.channel._protocolUpgradeForWebsockets(connection)
        # The request is over as far as HTTP goes: with thousands of idle
        # sockets, its headers and body buffer are memory for nothing.
        if request in request.channel.requests:
            request.channel.requests.remove(request)
        request.content.close()
        return NOT_DONE_YET


def _header(request: Request, name: bytes) -> str | None:
    value = request.getHeader(name)
    return None if value is None else value.decode("latin-1")


def _plain(request: Request, code: int, text: str) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    return text.encode("utf-8")
