"""PROTOCOL.md section 6: both protocols over WebSocket, on real sockets on 127.0.0.1."""

from __future__ import annotations

import re
import socket
import tempfile
import time
import urllib.request
from typing import Any

from twisted.internet import reactor
from twisted.internet.endpoints import SSL4ClientEndpoint, serverFromString
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.logger import globalLogPublisher
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase, TestCase
from wsproto import ConnectionType, WSConnection
from wsproto.events import Request, TextMessage

from chatd.webpage import web_site
from chatd.websocket import ChatSocket, same_origin
from tests.loopback import Loopback, Peer, spawn_chatd
from tests.test_limits_sockets import self_signed
from tests.support import command, frame
from tests.wsclient import Refused, WebSocketPeer, ws_connect


async def sleep(seconds: float) -> None:
    await deferLater(reactor, seconds, lambda: None)  # type: ignore[arg-type]


class Web(Loopback):
    """chatd's TCP port and its web port, on one hub, on 127.0.0.1."""

    web_port = 0
    origins: tuple[str, ...] = ()

    web_description = "tcp:0:interface=127.0.0.1"

    async def listen(self, description: str = "tcp:0:interface=127.0.0.1") -> Web:
        await super().listen(description)
        site = web_site(self.factory, self.origins)
        port = await serverFromString(reactor, self.web_description).listen(site)
        self.web_port = port.getHost().port
        self.case.addCleanup(port.stopListening)
        return self

    async def ws(self, origin: str | None = None, source: str = "127.0.0.1") -> WebSocketPeer:
        return await ws_connect(self.case, self.web_port, origin=origin, source=source)

    async def ws_named(self, name: str) -> WebSocketPeer:
        peer = await self.ws()
        peer.text(f"!nick {name}")
        await peer.until_text("!users ")
        peer.take()
        return peer

    async def line_named(self, name: str) -> Peer:
        peer = await self.connect()
        peer.send(f"!nick {name}\n".encode())
        await peer.until_received(b"!users ")
        peer.take()
        return peer


async def web(case: TestCase, origins: tuple[str, ...] = (), **limits: Any) -> Web:
    server = Web(case, **limits)
    server.origins = origins
    return await server.listen()


class LineOverWebSocketTests(TestCase):
    async def test_each_line_is_one_text_message(self) -> None:
        server = await web(self)
        tcp = await server.line_named("bob")
        alice = await server.ws()
        alice.text("!nick alice")
        self.assertEqual(await alice.until_count(1), ["!users 2 bob alice"])
        await tcp.until_received(b"!joined alice\n")
        tcp.send(b"!sendmsg hi alice\n")
        self.assertEqual((await alice.until_count(2))[1], "!msg bob hi alice")
        alice.text("!sendmsg hello bob")
        self.assertIn(b"!msg alice hello bob\n", await tcp.until_received(b"hello bob"))

    async def test_message_end_ends_a_line_without_waiting(self) -> None:
        # A minute's line flush: only the end of the message can end the line.
        server = await web(self, line_flush=60.0)
        alice = await server.ws()
        started = time.monotonic()
        alice.text("!nick alice")
        await alice.until_count(1)
        self.assertLess(time.monotonic() - started, 5.0)
        # Several lines in one message, and trailing line ends that change nothing.
        alice.text("!sendto alice one\n!sendto alice two\r\n")
        alice.text("!sendto alice three\n")
        alice.text("!sendto alice four")
        messages = await alice.until_count(5)
        self.assertEqual(
            messages[1:], [f"!privmsg alice {n}" for n in ("one", "two", "three", "four")]
        )

    async def test_a_message_sent_in_pieces_is_one_line(self) -> None:
        """The line-flush timer never applies: the message's end ends the line."""
        server = await web(self, line_flush=0.1)
        peer = await server.ws()
        peer.text("!nick par", finished=False)
        await sleep(0.4)
        peer.text("tial")
        await peer.until_text("!users 1 partial")
        self.assertEqual(peer.messages, ["!users 1 partial"])

    async def test_help_and_errors(self) -> None:
        server = await web(self)
        peer = await server.ws_named("alice")
        peer.text("!poke nobody")
        (error,) = await peer.until_count(1)
        self.assertTrue(str(error).startswith("!error no-such-user "), error)
        peer.text("!help")
        await peer.until(lambda got: len([m for m in got if str(m).startswith("!help ")]) >= 5)
        self.assertTrue(all(isinstance(m, str) and "\n" not in m for m in peer.messages))

    async def test_over_long_line_refused_like_tcp(self) -> None:
        server = await web(self, max_line_length=100)
        peer = await server.ws_named("alice")
        peer.text("!sendmsg " + "x" * 200)
        await peer.until_gone()
        self.assertEqual(peer.messages[-1], "!error line-too-long a line has at most 100 bytes")
        self.assertEqual(server.factory.hub.names(), [])

    async def test_quit_closes_cleanly(self) -> None:
        server = await web(self)
        tcp = await server.line_named("bob")
        peer = await server.ws_named("alice")
        await tcp.until_received(b"!joined alice\n")
        peer.text("!quit")
        await peer.until_gone()
        self.assertEqual(peer.close_code, 1000)
        await tcp.until_received(b"!left alice\n")


class BinaryOverWebSocketTests(TestCase):
    async def test_register_and_mail_across_protocols(self) -> None:
        server = await web(self)
        tcp = await server.line_named("bob")
        carol = await server.ws()
        carol.binary(command(b"register", b"carol"))
        await carol.until_count(1)
        # Each reply, all its frames, is one binary message.
        self.assertEqual(carol.take(), [frame(b"Hello, carol")])
        await tcp.until_received(b"!joined carol\n")
        tcp.send(b"!sendto carol hi carol\n!sendmsg hi all\n")
        await sleep(0.2)
        carol.binary(command(b"receive"))
        await carol.until_count(1)
        self.assertEqual(
            carol.take(), [frame(b"2") + frame(b"bob") + frame(b"hi carol") + frame(b"bob") + frame(b"hi all")]
        )
        carol.binary(command(b"sendall", b"hello bob"))
        await tcp.until_received(b"!msg carol hello bob\n")
        carol.binary(command(b"users"))
        self.assertEqual(await carol.until_count(2), [frame(b"Message added to storage!"), frame(b"2") + frame(b"bob") + frame(b"carol")])

    async def test_frames_span_messages_and_share_them(self) -> None:
        server = await web(self)
        peer = await server.ws()
        stream = command(b"register", b"dave") + command(b"users") + command(b"logout")
        # Split across messages at odd places, one of them mid-prefix.
        for start in range(0, len(stream), 5):
            peer.binary(stream[start : start + 5])
        await peer.until_frames(4)
        self.assertEqual(
            peer.frames(),
            [b"Hello, dave", b"1", b"dave", b"U've been successfully logouted"],
        )

    async def test_each_reply_is_one_message(self) -> None:
        """Commands sent together get their replies each in a binary message of its own."""
        server = await web(self)
        peer = await server.ws()
        peer.binary(command(b"register", b"erin") + command(b"users") + command(b"receive"))
        await peer.until_count(3)
        self.assertEqual(
            peer.messages,
            [frame(b"Hello, erin"), frame(b"1") + frame(b"erin"), frame(b"0")],
        )

    async def test_over_long_frame_refused_like_tcp(self) -> None:
        server = await web(self, max_frame_length=64)
        peer = await server.ws()
        peer.binary(command(b"register", b"x" * 100))
        await peer.until_gone()
        self.assertEqual(peer.frames(), [b"Frame is too long!"])


class LimitTests(TestCase):
    async def test_websocket_counts_against_its_host(self) -> None:
        server = await web(self, max_connections_per_host=2, close_grace=0.3)
        await server.line_named("tcp")
        await server.ws_named("ws")
        third = await server.ws()
        third.text("!nick late")
        await third.until_gone()
        self.assertEqual(third.messages, ["!error server-full the server is full; try again later"])
        # Another host is let in.
        other = await server.ws(source="127.0.0.2")
        other.text("!nick other")
        await other.until_text("!users 3")

    async def test_handshake_timeout(self) -> None:
        server = await web(self, handshake_timeout=0.3)
        silent = await server.ws()
        await silent.until_gone()
        self.assertEqual(silent.messages, ["!error timeout no !nick in time"])

    async def test_idle_binary_user_closed(self) -> None:
        server = await web(self, idle_timeout=0.3)
        peer = await server.ws()
        peer.binary(command(b"register", b"idle"))
        await peer.until_gone()
        self.assertEqual(peer.frames(), [b"Hello, idle"])
        # Going offline is not logging out.
        self.assertEqual(server.factory.hub.names(), ["idle"])

    async def test_flood_told_and_closed(self) -> None:
        server = await web(self, command_rate=20.0, command_burst=5, max_input_backlog=4096)
        flooder = await server.ws_named("f")
        honest = await server.ws_named("h")
        flooder.text("!users\n" * 2000)
        honest.text("!users")
        await honest.until_text("!users 2")
        await flooder.until_gone()
        self.assertEqual(flooder.messages[-1], "!error flood too many commands; slow down")
        self.assertEqual(server.factory.hub.names(), ["h"])

    async def test_non_reading_client_dropped_at_the_bound(self) -> None:
        bound = 64 * 1024
        server = await web(
            self, max_output_backlog=bound, max_message_length=1000,
            command_rate=1000.0, command_burst=1000, max_input_backlog=4 * 1024 * 1024,
            broadcast_rate=1000.0, broadcast_burst=1000,
        )  # fmt: skip
        warnings: list[dict[str, Any]] = []
        observer = lambda e: warnings.append(e) if e.get("reason") == "slow-reader" else None  # noqa: E731
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        await never_reads(server, "slow")
        reader = await server.ws_named("reader")
        talker = await server.line_named("talker")
        (slow,) = [c for c in server.factory.connections if c.inner and c.inner.user and c.inner.user.name == "slow"]
        self.assertEqual(slow.transport.chatd_transport_kind, "websocket")
        slow.transport.tcp.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)

        text = b"x" * 900
        count = 600
        talker.send(b"".join(b"!sendmsg %d %s\n" % (i, text) for i in range(count)))
        said = lambda got: [m for m in got if str(m).startswith("!msg ")]  # noqa: E731
        got = await reader.until(lambda m: len(said(m)) >= count, timeout=20)
        self.assertEqual(said(got), [f"!msg talker {i} {text.decode()}" for i in range(count)])
        self.assertEqual(len(warnings), 1)
        self.assertEqual(server.factory.hub.names(), ["reader", "talker"])


async def never_reads(server: Web, name: str) -> socket.socket:
    """A WebSocket client with a small receive window that takes C{name} and never reads."""
    ws = WSConnection(ConnectionType.CLIENT)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(5)
    server.case.addCleanup(sock.close)
    await deferToThread(sock.connect, ("127.0.0.1", server.web_port))
    sock.sendall(ws.send(Request(host="127.0.0.1", target="/ws")))
    answer = b""
    while b"\r\n\r\n" not in answer:
        answer += await deferToThread(sock.recv, 4096)
    assert answer.startswith(b"HTTP/1.1 101"), answer
    ws.receive_data(answer)
    list(ws.events())
    sock.sendall(ws.send(TextMessage(f"!nick {name}")))
    for _ in range(500):
        if name in server.factory.hub.names():
            break
        await sleep(0.01)
    return sock


class OriginTests(TestCase):
    async def test_same_origin_allowed(self) -> None:
        server = await web(self)
        peer = await server.ws(origin=f"http://127.0.0.1:{server.web_port}")
        peer.text("!nick alice")
        await peer.until_text("!users 1 alice")

    async def test_no_origin_allowed(self) -> None:
        server = await web(self)
        await server.ws_named("alice")

    async def test_other_origin_refused_with_403(self) -> None:
        server = await web(self)
        for origin in ["http://evil.example", f"http://127.0.0.1:{server.web_port + 1}", "null"]:
            with self.assertRaises(Refused) as caught:
                await server.ws(origin=origin)
            self.assertEqual(caught.exception.status, 403)
        self.assertEqual(len(server.factory.connections), 0)

    async def test_listed_origin_allowed(self) -> None:
        server = await web(self, origins=("https://chat.example.com",))
        peer = await server.ws(origin="https://chat.example.com")
        peer.text("!nick alice")
        await peer.until_text("!users 1 alice")


class OriginRuleTests(SynchronousTestCase):
    def test_same_origin(self) -> None:
        self.assertTrue(same_origin("http://localhost:8080", "localhost:8080"))
        self.assertTrue(same_origin("http://LocalHost:8080", "localhost:8080"))
        self.assertTrue(same_origin("https://chat.example.com", "chat.example.com"))
        self.assertTrue(same_origin("https://chat.example.com", "chat.example.com:443"))
        self.assertTrue(same_origin("http://[::1]:8080", "[::1]:8080"))
        self.assertFalse(same_origin("http://localhost:8081", "localhost:8080"))
        self.assertFalse(same_origin("http://evil.com:8080", "localhost:8080"))
        self.assertFalse(same_origin("https://chat.example.com", "chat.example.com:8443"))
        self.assertFalse(same_origin("null", "localhost:8080"))
        self.assertFalse(same_origin("http://localhost:8080", ""))

    def test_listed_origins(self) -> None:
        socket_ = ChatSocket(None, ["https://chat.example.com", "http://localhost:3000/"])  # type: ignore[arg-type]
        self.assertTrue(socket_.allowed("https://chat.example.com:443", "elsewhere:8080"))
        self.assertTrue(socket_.allowed("http://localhost:3000", "localhost:8080"))
        self.assertFalse(socket_.allowed("http://chat.example.com", "localhost:8080"))
        self.assertTrue(socket_.allowed(None, "localhost:8080"))


class PageTests(TestCase):
    async def test_page_and_its_files_are_served(self) -> None:
        server = await web(self)
        base = f"http://127.0.0.1:{server.web_port}/"

        def get(path: str) -> tuple[int, str, bytes]:
            with urllib.request.urlopen(base + path, timeout=5) as response:
                return response.status, response.headers["content-type"], response.read()

        status, kind, body = await deferToThread(get, "")
        self.assertEqual((status, kind), (200, "text/html; charset=utf-8"))
        self.assertIn(b'<script type="module" src="app.js">', body)
        for name, expected in [("app.js", "text/javascript"), ("style.css", "text/css")]:
            status, kind, _ = await deferToThread(get, name)
            self.assertEqual((status, kind.split(";")[0]), (200, expected))


class TLSTests(TestCase):
    async def test_wss(self) -> None:
        directory = FilePath(tempfile.mkdtemp())
        self.addCleanup(directory.remove)
        options, pem = self_signed(directory)
        server = Web(self, handshake_timeout=0.5)
        server.web_description = f"ssl:0:interface=127.0.0.1:{options}"
        await server.listen()
        tls = optionsForClientTLS("localhost", trustRoot=Certificate.loadPEM(pem))

        async def connect() -> WebSocketPeer:
            endpoint = SSL4ClientEndpoint(reactor, "127.0.0.1", server.web_port, tls)
            return await ws_connect(self, server.web_port, endpoint=endpoint,
                                    origin=f"https://localhost:{server.web_port}",
                                    host=f"localhost:{server.web_port}")  # fmt: skip

        alice = await connect()
        alice.text("!nick alice")
        await alice.until_text("!users 1 alice")
        carol = await connect()
        carol.binary(command(b"register", b"carol"))
        await carol.until_frames(1)
        bob = await server.line_named("bob")
        alice.text("!sendmsg over tls")
        # Two connections: carol asks once alice's message is in.
        await bob.until_received(b"!msg alice over tls")
        carol.take()
        carol.binary(command(b"receive"))
        await carol.until_frames(3)
        self.assertEqual(carol.frames(), [b"1", b"alice", b"over tls"])
        silent = await connect()
        await silent.until_gone()
        self.assertEqual(silent.messages, ["!error timeout no !nick in time"])


class StartTests(TestCase):
    async def test_log_says_where_each_endpoint_listens_and_the_page(self) -> None:
        chatd, port = await spawn_chatd(self, "--web", "tcp:0:interface=127.0.0.1")
        for _ in range(200):
            if b"web page on" in chatd.output:
                break
            await sleep(0.05)
        log = chatd.output.decode()
        self.assertIn(f"chat (line and binary protocols) on 127.0.0.1:{port}", log)
        found = re.search(r"web page on 127\.0\.0\.1:(\d+): open http://127\.0\.0\.1:(\d+)/", log)
        assert found is not None, log
        self.assertEqual(found.group(1), found.group(2))


class WebConnectionLimitTests(TestCase):
    async def test_ended_websockets_free_their_place(self) -> None:
        """An upgraded connection is counted by the chat factory, and forgotten when it ends."""
        server = await web(self, max_connections_per_host=1, close_grace=0.3)
        for n in range(3):
            peer = await server.ws_named(f"u{n}")
            peer.transport.loseConnection()
            await peer.until_gone()
            await sleep(0.1)
        url = f"http://127.0.0.1:{server.web_port}/"
        page = await deferToThread(lambda: urllib.request.urlopen(url, timeout=5).status)
        self.assertEqual(page, 200)
        again = await server.ws()
        again.text("!nick again")
        await again.until_text("!users 1 again")

    async def test_a_dribbled_request_is_cut_off(self) -> None:
        """Twisted's idle timeout restarts with each byte; the first request has a deadline."""
        server = await web(self, handshake_timeout=0.5)
        sock = socket.create_connection(("127.0.0.1", server.web_port), timeout=5)
        self.addCleanup(sock.close)
        sock.sendall(b"GET / HTTP/1.1\r\nX-A: ")
        started = time.monotonic()
        gone = False
        for _ in range(20):
            await sleep(0.15)
            try:
                sock.sendall(b"a")
            except OSError:
                gone = True
                break
            if time.monotonic() - started > 2.5:
                break
        self.assertTrue(gone, "still open after dribbling past the handshake timeout")
        self.assertLess(time.monotonic() - started, 2.5)

    async def test_http_connections_count_per_host(self) -> None:
        server = await web(self, max_connections_per_host=2, handshake_timeout=5.0)
        site_port = server.web_port
        held = []
        for _ in range(2):
            sock = socket.create_connection(("127.0.0.1", site_port), timeout=5)
            self.addCleanup(sock.close)
            held.append(sock)
        await sleep(0.2)
        refused = socket.create_connection(("127.0.0.1", site_port), timeout=5)
        self.addCleanup(refused.close)
        # Turned away at once: closed without a byte.
        self.assertEqual(await deferToThread(refused.recv, 100), b"")
        other = await server.ws(source="127.0.0.2")
        other.text("!nick other")
        await other.until_text("!users 1 other")
        held[0].close()
        await sleep(0.2)
        again = await server.ws()
        again.text("!nick again")
        await again.until_text("!users 2")
