"""PROTOCOL.md section 5 over real sockets on 127.0.0.1, with short limits."""

from __future__ import annotations

import datetime
import signal
import socket
import tempfile
import time
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import reactor
from twisted.internet.endpoints import SSL4ClientEndpoint
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.internet.task import deferLater
from twisted.logger import globalLogPublisher
from twisted.python.filepath import FilePath
from twisted.trial.unittest import TestCase

from tests.loopback import Loopback, Peer, frame_count, spawn_chatd
from tests.support import command

FULL = b"!error server-full the server is full; try again later\n"


async def sleep(seconds: float) -> None:
    await deferLater(reactor, seconds, lambda: None)  # type: ignore[arg-type]


async def named(server: Loopback, name: str, source: str = "127.0.0.1") -> Peer:
    peer = await server.connect(source)
    peer.send(f"!nick {name}\n".encode())
    await peer.until_received(b"!users ")
    peer.take()
    return peer


async def registered(server: Loopback, name: bytes, source: str = "127.0.0.1") -> Peer:
    peer = await server.connect(source)
    peer.send(command(b"register", name))
    await peer.until(frame_count(1))
    assert peer.frames() == [b"Hello, " + name], peer.received
    peer.take()
    return peer


class ConnectionLimitTests(TestCase):
    async def test_total(self) -> None:
        server = await Loopback(self, max_connections=2, close_grace=0.3).listen()
        await named(server, "a")
        await registered(server, b"b")
        line = await server.connect()
        line.send(b"!nick c\n")
        self.assertEqual(await line.until_received(b"\n"), FULL)
        await line.until_gone()
        binary = await server.connect()
        binary.send(command(b"register", b"d"))
        await binary.until_gone()
        self.assertEqual(binary.frames(), [b"Server is full!"])
        silent = await server.connect()
        await silent.until_gone()
        self.assertEqual(bytes(silent.received), FULL)

    async def test_per_host(self) -> None:
        server = await Loopback(self, max_connections_per_host=1).listen()
        await named(server, "a", "127.0.0.1")
        again = await server.connect("127.0.0.1")
        again.send(b"!nick b\n")
        self.assertEqual(await again.until_received(b"\n"), FULL)
        await named(server, "b", "127.0.0.2")


class TimeoutTests(TestCase):
    async def test_handshake(self) -> None:
        server = await Loopback(self, handshake_timeout=0.3).listen()
        silent = await server.connect()
        started = time.monotonic()
        await silent.until_gone()
        self.assertEqual(bytes(silent.received), b"!error timeout no !nick in time\n")
        self.assertLess(time.monotonic() - started, 2.0)

    async def test_idle(self) -> None:
        server = await Loopback(self, handshake_timeout=0.3, idle_timeout=0.3).listen()
        binary = await registered(server, b"bob")
        line = await named(server, "liz")
        await binary.until_gone()
        self.assertEqual(bytes(binary.received), b"")
        await sleep(0.3)
        self.assertFalse(line.closed)
        line.send(b"!users\n")
        self.assertEqual(await line.until_received(b"\n"), b"!users 2 bob liz\n")


class FloodTests(TestCase):
    limits: dict[str, Any] = dict(command_rate=20.0, command_burst=5, max_input_backlog=4096)

    async def test_paste_is_delayed_not_lost(self) -> None:
        server = await Loopback(self, **self.limits).listen()
        peer = await named(server, "a")
        await sleep(0.3)  # the burst refills
        started = time.monotonic()
        peer.send(b"".join(b"!sendto a n%d\n" % i for i in range(15)))
        await peer.until(lambda got: got.count(b"\n") == 15)
        # Five at once, ten more at 20 a second.
        self.assertGreater(time.monotonic() - started, 0.4)
        self.assertEqual(peer.lines(), [f"!privmsg a n{i}" for i in range(15)])

    async def test_flood_told_and_closed_others_served(self) -> None:
        server = await Loopback(self, **self.limits).listen()
        flooder = await named(server, "f")
        honest = await named(server, "h")
        flooder.send(b"!users\n" * 20000)
        started = time.monotonic()
        honest.send(b"!users\n")
        await honest.until_received(b"!users 2")
        self.assertLess(time.monotonic() - started, 0.5)
        await flooder.until_gone()
        self.assertTrue(flooder.received.endswith(b"!error flood too many commands; slow down\n"))
        self.assertEqual(server.factory.hub.names(), ["h"])


class SlowReaderTests(TestCase):
    async def test_slow_reader_dropped_others_served(self) -> None:
        bound, rate, count = 256 * 1024, 500.0, 1000
        server = await Loopback(
            self,
            max_output_backlog=bound,
            max_message_length=1000,
            command_rate=rate,
            command_burst=50,
            broadcast_rate=rate,
            broadcast_burst=50,
            max_input_backlog=8 * 1024 * 1024,
        ).listen()
        warnings: list[dict[str, Any]] = []
        observer = lambda e: warnings.append(e) if e.get("reason") == "slow-reader" else None  # noqa: E731
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)

        await never_reads(server, b"!nick slow\n")
        reader = await named(server, "reader")
        talker = await named(server, "talker")
        peaks = {c.inner.user.name: watch_buffer(c.transport) for c in server.factory.connections}
        # The kernel would otherwise hold megabytes for it before chatd holds any.
        (slow_side,) = [c for c in server.factory.connections if c.inner.user.name == "slow"]
        slow_side.transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)

        # About 0.9 MB to each: the slow reader's share cannot all fit in the bound.
        text = b"x" * 900
        started = time.monotonic()
        talker.send(b"".join(b"!sendmsg %d %s\n" % (i, text) for i in range(count)))
        await reader.until(lambda got: got.count(b"!msg ") == count, timeout=20)
        elapsed = time.monotonic() - started

        messages = [line for line in reader.lines() if line.startswith("!msg ")]
        self.assertEqual(messages, [f"!msg talker {i} {text.decode()}" for i in range(count)])
        self.assertEqual(len(warnings), 1)
        self.assertEqual(server.factory.hub.names(), ["reader", "talker"])
        # The transport pauses its producer past its own 64 KiB buffer; the
        # backlog bound counts from there, and one write may cross it.
        self.assertLessEqual(peaks["slow"][0], bound + 64 * 1024 + 1024)
        self.assertLess(peaks["reader"][0], 64 * 1024)
        # The reader was held to nothing but the talker's command rate.
        self.assertLess(elapsed, count / rate + 1.0)


async def never_reads(server: Loopback, first: bytes) -> socket.socket:
    """A client with a small receive window that sends C{first} and never reads."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    sock.sendall(first)
    server.case.addCleanup(sock.close)
    while not server.factory.hub.names():
        await sleep(0.01)
    return sock


def watch_buffer(transport: Any) -> list[int]:
    """The most bytes a TCP transport has held unsent, as writes happen."""
    peak = [0]
    write = transport.write

    def watched(data: bytes) -> None:
        write(data)
        held = len(transport.dataBuffer) - transport.offset + transport._tempDataLen
        peak[0] = max(peak[0], held)

    transport.write = watched
    return peak


class StateLimitTests(TestCase):
    async def test_users_and_mailbox(self) -> None:
        server = await Loopback(self, max_binary_users_per_host=1, mailbox_size=1).listen()
        bob = await registered(server, b"bob")
        other = await server.connect("127.0.0.1")
        other.send(command(b"register", b"eve"))
        await other.until_gone()
        self.assertEqual(other.frames(), [b"Too many users from your host!"])
        eve = await registered(server, b"eve", "127.0.0.2")
        eve.send(command(b"send", b"bob", b"one") + command(b"send", b"bob", b"two"))
        await eve.until(frame_count(2))
        self.assertEqual(eve.frames(), [b"Message added to storage!", b"Mailbox of 'bob' is full!"])
        bob.send(command(b"receive"))
        await bob.until(frame_count(3))
        self.assertEqual(bob.frames(), [b"1", b"eve", b"one"])


def self_signed(directory: FilePath) -> tuple[str, bytes]:
    """A key and a certificate for localhost in C{directory}: its strports options, its PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM)
    key_file, cert_file = directory.child("key.pem"), directory.child("cert.pem")
    key_file.setContent(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cert_file.setContent(pem)
    return f"privateKey={key_file.path}:certKey={cert_file.path}", pem


class TLSTests(TestCase):
    async def test_both_protocols_over_tls(self) -> None:
        directory = FilePath(tempfile.mkdtemp())
        self.addCleanup(directory.remove)
        options, pem = self_signed(directory)
        server = await Loopback(self, handshake_timeout=0.5).listen(
            f"ssl:0:interface=127.0.0.1:{options}"
        )
        tls = optionsForClientTLS("localhost", trustRoot=Certificate.loadPEM(pem))

        def endpoint() -> SSL4ClientEndpoint:
            return SSL4ClientEndpoint(reactor, "127.0.0.1", server.port, tls)

        liz = await server.connect(endpoint=endpoint())
        liz.send(b"!nick liz\n")
        await liz.until_received(b"!users 1 liz\n")
        bob = await server.connect(endpoint=endpoint())
        bob.send(command(b"register", b"bob"))
        await bob.until(frame_count(1))
        # !sendto has no answer: the !users after it shows it was handled.
        liz.send(b"!sendto bob hi\n!users\n")
        await liz.until_received(b"!users 2 liz bob\n")
        bob.send(command(b"receive") + command(b"sendall", b"yo"))
        await bob.until(frame_count(5))
        self.assertEqual(bob.frames()[1:], [b"1", b"liz", b"hi", b"Message added to storage!"])
        await liz.until_received(b"!msg bob yo\n")
        # The limits hold over TLS too: a client that never says a word.
        silent = await server.connect(endpoint=endpoint())
        await silent.until_gone()
        self.assertEqual(bytes(silent.received), b"!error timeout no !nick in time\n")


class SigtermTests(TestCase):
    async def test_told_closed_and_gone_in_seconds(self) -> None:
        chatd, port = await spawn_chatd(self, "--close-grace", "1")
        server = Loopback(self)
        server.port = port
        # Accepted in turn: once the others are served, so is the silent one.
        silent = await server.connect()
        line = await named(server, "liz")
        binary = await registered(server, b"bob")
        await line.until_received(b"!joined bob\n")
        line.take()
        started = time.monotonic()
        chatd.transport.signalProcess("TERM")  # type: ignore[union-attr]
        for peer in (line, binary, silent):
            await peer.until_gone()
        ended = await chatd.ended.addTimeout(5, reactor)  # type: ignore[arg-type]
        self.assertLess(time.monotonic() - started, 3.0)
        # twistd stops cleanly, then ends by the signal it was sent.
        self.assertEqual(ended.signal, signal.SIGTERM)  # type: ignore[attr-defined]
        self.assertIn(b"Server Shut Down.", chatd.output)
        shutdown = b"!error server-shutdown the server is shutting down\n"
        self.assertEqual(bytes(line.received), shutdown)
        self.assertEqual(bytes(binary.received), b"")
        self.assertEqual(bytes(silent.received), shutdown)


async def receive(peer: Peer) -> list[tuple[bytes, bytes]]:
    """A binary client's mail, as (sender, text) pairs."""
    peer.take()
    peer.send(command(b"receive"))

    def whole(got: bytes) -> bool:
        return frame_count(1)(got) and frame_count(1 + 2 * int(Peer.first(got)))(got)

    await peer.until(whole)
    frames = peer.frames()
    return list(zip(frames[1::2], frames[2::2]))


class FairMailTests(TestCase):
    async def test_flooders_cannot_crowd_out_honest_mail(self) -> None:
        """Default limits: three hosts flood broadcasts; honest mail all arrives, once."""
        server = await Loopback(self).listen()
        mailbox = await registered(server, b"bob", source="127.0.3.1")
        reader = await named(server, "reader", source="127.0.3.2")
        talker = await named(server, "talker", source="127.0.3.3")
        scripter = await registered(server, b"script", source="127.0.3.4")
        flooders = [await named(server, f"f{i}", source=f"127.0.4.{i}") for i in range(3)]
        for flooder in flooders:
            flooder.send(b"!sendmsg spam\n" * 300)

        mail: list[tuple[bytes, bytes]] = []
        for n in range(10):
            talker.send(b"!sendmsg t%d\n" % n)
            scripter.send(command(b"sendall", b"s%d" % n))
            await sleep(0.1)
            mail += await receive(mailbox)
        await sleep(0.3)
        mail += await receive(mailbox)

        honest = [(s, t) for s, t in mail if s in (b"talker", b"script")]
        self.assertEqual(
            sorted(honest),
            sorted([(b"talker", b"t%d" % n) for n in range(10)] + [(b"script", b"s%d" % n) for n in range(10)]),
        )
        # Each flooder got its broadcast budget through, not its 300 commands.
        for i in range(3):
            self.assertLess(mail.count((b"f%d" % i, b"spam")), 40)
        self.assertNotIn(b"!error", talker.received)
        self.assertEqual(scripter.frames(), [b"Message added to storage!"] * 10)
        heard = [line for line in reader.lines() if line.startswith(("!msg talker", "!msg script"))]
        self.assertEqual(len(heard), 20)
        self.assertEqual(len(set(heard)), 20)
