"""A real chatd under twistd, scraped over HTTP: each figure against what the test did.

The server runs as C{twistd -n chatd --metrics tcp:0:...} in a subprocess, on
loopback ports (TCP, TLS and a Unix socket); the clients are blocking sockets.
"""

from __future__ import annotations

import json
import os
import re
import socket
import sqlite3
import ssl
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any, Callable

from prometheus_client.parser import text_string_to_metric_families
from twisted.python.filepath import FilePath
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request, TextMessage
from twisted.trial.unittest import SynchronousTestCase

from chatd import __version__, binwire
from tests.support import command, temporary_directory
from tests.test_limits_sockets import self_signed

WORKTREE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT = 10.0
TWISTD = "from twisted.scripts.twistd import run; run()"
LOOPBACK = "interface=127.0.0.1"


class Twistd:
    """C{twistd -n chatd OPTIONS --metrics tcp:0:...}, its log going to C{log}."""

    def __init__(self, case: SynchronousTestCase, directory: str, *options: str,
                 logfile: bool = True, web: bool = False) -> None:
        self.log = os.path.join(directory, f"twistd-{time.monotonic_ns()}.log")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [WORKTREE, *filter(None, [os.environ.get("PYTHONPATH")])])}
        # Without --logfile, twistd -n logs to its standard output.
        twistd_options = ["--logfile", self.log] if logfile else []
        self.out = open(self.log if not logfile else os.devnull, "w")
        case.addCleanup(self.out.close)
        self.process = subprocess.Popen(
            [sys.executable, "-c", TWISTD, "-n", "--pidfile=", *twistd_options,
             "chatd", *([] if web else ["--no-web"]), "--metrics", f"tcp:0:{LOOPBACK}",
             *options],
            env=env, cwd=directory, stdin=subprocess.DEVNULL, stdout=self.out,
            stderr=subprocess.PIPE,
        )
        case.addCleanup(self._kill)
        self.ports = self._listening(1 + options.count("--port") + options.count("--web"))

    def _listening(self, listeners: int) -> dict[str, str]:
        """Wait for the ports to listen: what logged each, and where."""
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"chatd exited: {self.process.stderr.read()!r}")
            # The first of each kind: "ChatFactory (TLS)", "MetricsSite", ...
            found: dict[str, str] = {}
            for m in re.finditer(r"(\w+(?: \(TLS\))?) starting on '?([^'\s\"]+)", self.text()):
                found.setdefault(m.group(1), m.group(2))
            if len(re.findall(" starting on ", self.text())) == listeners:
                return found
            time.sleep(0.02)
        raise AssertionError(f"chatd did not start listening:\n{self.text()}")

    def text(self) -> str:
        try:
            with open(self.log) as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.ports['MetricsSite']}{path}"

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.url(path), timeout=TIMEOUT) as response:
                return response.status, response.read().decode("utf-8")
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode("utf-8")

    def scrape(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        status, body = self.get("/metrics")
        assert status == 200, status
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(body)
            for sample in family.samples
        }

    def stop(self) -> str:
        self.process.terminate()
        self.process.wait(TIMEOUT)
        return self.text()

    def _kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(TIMEOUT)
        self.process.stderr.close()


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def eventually(probe: Callable[[], Any], ok: Callable[[Any], bool], what: str) -> Any:
    deadline = time.monotonic() + TIMEOUT
    while True:
        got = probe()
        if ok(got):
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {TIMEOUT} s for {what}; last saw {got!r}")
        time.sleep(0.05)


class Peer:
    """A blocking client of either protocol."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sock.settimeout(TIMEOUT)
        self.buffer = b""

    @classmethod
    def tcp(cls, port: int) -> Peer:
        return cls(socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT))

    @classmethod
    def unix(cls, path: str) -> Peer:
        sock = socket.socket(socket.AF_UNIX)
        sock.connect(path)
        return cls(sock)

    @classmethod
    def tls(cls, port: int) -> Peer:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        raw = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        return cls(context.wrap_socket(raw))

    def _more(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionResetError("closed by the server")
        self.buffer += data

    def line(self) -> str:
        while b"\n" not in self.buffer:
            self._more()
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode("utf-8")

    def frame(self) -> str:
        while True:
            if len(self.buffer) >= 4:
                (n,) = struct.unpack("<I", self.buffer[:4])
                if len(self.buffer) >= 4 + n:
                    payload, self.buffer = self.buffer[4 : 4 + n], self.buffer[4 + n :]
                    return payload.decode("utf-8")
            self._more()

    def ask(self, *parts: bytes) -> str:
        self.sock.sendall(command(*parts))
        return self.frame()

    def closed_by_server(self) -> bytes:
        """Everything until the server closes; fails if it does not within the timeout."""
        while True:
            data = self.sock.recv(65536)
            if not data:
                return self.buffer
            self.buffer += data

    def close(self) -> None:
        self.sock.close()


class ScrapeTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = temporary_directory(self)
        self.database = os.path.join(self.directory, "chatd.sqlite")
        self.socket = os.path.join(self.directory, "chatd.sock")
        tls_options, _ = self_signed(FilePath(self.directory))
        self.chatd = Twistd(
            self, self.directory,
            "--database", self.database, "--max-line-length", "64",
            "--port", f"tcp:0:{LOOPBACK}",
            "--port", f"unix:{self.socket}",
            "--port", f"ssl:0:{LOOPBACK}:{tls_options}",
        )
        ports = self.chatd.ports
        self.port = int(ports["ChatFactory"])
        self.tls_port = int(ports["ChatFactory (TLS)"])

    def peers(self, *peers: Peer) -> None:
        for peer in peers:
            self.addCleanup(peer.close)

    def test_every_figure(self) -> None:
        chatd = self.chatd
        self.assertEqual(chatd.get("/healthz"), (200, "ok\n"))
        liz, tina, bob, silent = (Peer.tcp(self.port), Peer.tls(self.tls_port),
                                  Peer.unix(self.socket), Peer.tcp(self.port))
        self.peers(liz, tina, bob, silent)
        liz.sock.sendall(b"!nick liz\n")
        self.assertEqual(liz.line(), "!users 1 liz")
        tina.sock.sendall(b"!nick tina\n")
        self.assertEqual(tina.line(), "!users 2 liz tina")
        self.assertEqual(bob.ask(b"register", b"bob"), "Hello, bob")
        liz.sock.sendall(b"!sendmsg hi all\n!sendto nobody x\n!users\n")
        self.assertEqual(liz.line(), "!joined tina")
        self.assertEqual(liz.line(), "!joined bob")
        self.assertTrue(liz.line().startswith("!error no-such-user"))
        self.assertEqual(liz.line(), "!users 3 liz tina bob")

        got = chatd.scrape()
        connections = {
            (labels[0][1], labels[1][1]): n
            for (name, labels), n in got.items()
            if name == "chatd_connections" and n
        }
        self.assertEqual(
            connections,
            {("line", "tcp"): 1, ("line", "tls"): 1, ("binary", "unix"): 1, ("none", "tcp"): 1},
        )
        self.assertEqual(value(got, "chatd_users", protocol="line", state="online"), 2)
        self.assertEqual(value(got, "chatd_users", protocol="binary", state="online"), 1)
        self.assertEqual(value(got, "chatd_deliveries_total", route="push"), 1)
        self.assertEqual(value(got, "chatd_deliveries_total", route="mailbox"), 1)
        self.assertEqual(value(got, "chatd_mailbox_messages"), 1)
        self.assertEqual(value(got, "chatd_build_info", version=__version__), 1)
        self.assertGreater(value(got, "process_resident_memory_bytes"), 0)
        # The initial registration was committed, and measured.
        self.assertGreaterEqual(value(got, "chatd_store_commit_seconds_count"), 1)
        self.assertEqual(value(got, "chatd_store_failures_total"), 0)

        bob.sock.sendall(command(b"receive"))
        self.assertEqual([bob.frame() for _ in range(3)], ["1", "liz", "hi all"])
        self.assertEqual(value(chatd.scrape(), "chatd_mailbox_messages"), 0)

        # A way to end for each reason that does not need a clock.
        bob.close()
        quitter, garbage, long, refused = (Peer.tcp(self.port) for _ in range(4))
        self.peers(quitter, garbage, long, refused)
        quitter.sock.sendall(b"!nick q\n!quit\n")
        garbage.sock.sendall(command(b"GET / HTTP/1.1"))
        long.sock.sendall(b"!nick " + b"x" * 70 + b"\n")
        refused.sock.sendall(command(b"register", b"bad name"))
        self.assertEqual(garbage.closed_by_server(), struct.pack("<I", 16) + b"Unknown command!")
        self.assertEqual(refused.closed_by_server(), struct.pack("<I", 10) + b"Bad login!")
        self.assertIn(b"!error line-too-long", long.closed_by_server())
        quitter.closed_by_server()
        reasons = ["client-closed", "quit", "unknown-command", "line-too-long", "refused"]
        got = eventually(
            chatd.scrape,
            lambda got: all(value(got, "chatd_connections_closed_total", reason=r) for r in reasons),
            "the connections to be counted closed",
        )
        closed = {
            labels[0][1]: n
            for (name, labels), n in got.items()
            if name == "chatd_connections_closed_total" and n
        }
        self.assertEqual(closed, dict.fromkeys(reasons, 1))
        commands = {
            tuple(v for _, v in labels): n
            for (name, labels), n in got.items()
            if name == "chatd_commands_total" and n
        }
        self.assertEqual(
            commands,
            {
                ("nick", "line", "ok"): 3,
                ("sendmsg", "line", "ok"): 1,
                ("sendto", "line", "error"): 1,
                ("users", "line", "ok"): 1,
                ("quit", "line", "ok"): 1,
                ("register", "binary", "ok"): 1,
                ("register", "binary", "error"): 1,
                ("receive", "binary", "ok"): 1,
                ("unknown", "binary", "error"): 1,
            },
        )
        self.assertEqual(value(got, "chatd_users", protocol="binary", state="offline"), 1)

        log = chatd.stop()
        self.assertIn("Server Shut Down.", log)
        # Each ending logged once, with its peer.
        self.assertEqual(len(re.findall(r"ending IPv4Address.*: line-too-long", log)), 1, log)
        self.assertIn("over --max-line-length 64", log)

    def test_store_failure_unhealthy_then_healthy(self) -> None:
        chatd = self.chatd
        bob = Peer.tcp(self.port)
        self.peers(bob)
        self.assertEqual(bob.ask(b"register", b"bob"), "Hello, bob")
        # Another writer holds the database: chatd's commit waits its 5 s, then fails.
        lock = sqlite3.connect(self.database, isolation_level=None)
        self.addCleanup(lock.close)
        lock.execute("BEGIN EXCLUSIVE")
        bob.sock.sendall(command(b"send", b"bob", b"kept?"))
        self.assertEqual(bob.frame(), binwire.STORE_FAILED)
        status, body = chatd.get("/healthz")
        self.assertEqual((status, body), (503, "store cannot commit: database is locked\n"))
        got = chatd.scrape()
        self.assertGreaterEqual(value(got, "chatd_store_failures_total"), 1)
        lock.execute("ROLLBACK")
        eventually(lambda: chatd.get("/healthz"), lambda got: got == (200, "ok\n"), "health")
        # The change was kept and tried again: the mail is there, for the
        # same connection, which stayed open.
        bob.sock.sendall(command(b"receive"))
        self.assertEqual([bob.frame() for _ in range(3)], ["1", "bob", "kept?"])


class JsonLogTests(SynchronousTestCase):
    def run_chatd(self, logfile: bool) -> tuple[list[dict[str, Any]], int]:
        directory = temporary_directory(self)
        chatd = Twistd(self, directory, "--log-format", "json", "--max-line-length", "16",
                       "--port", f"tcp:0:{LOOPBACK}", logfile=logfile)
        port = int(chatd.ports["ChatFactory"])
        long = Peer.tcp(port)
        self.addCleanup(long.close)
        long.sock.sendall(b"!nick liz\n!sendmsg " + "é".encode() * 20 + b"\n")
        self.assertIn(b"!error line-too-long", long.closed_by_server())
        self.assertEqual(chatd.get("/healthz")[0], 200)
        text = chatd.stop()
        self.assertTrue(text.endswith("\n"))
        return [json.loads(line) for line in text.splitlines()], int(chatd.ports["MetricsSite"])

    def check(self, events: list[dict[str, Any]], metrics_port: int) -> None:
        for event in events:
            self.assertLessEqual({"time", "level", "namespace", "message"}, set(event), event)
            self.assertRegex(event["time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00$")
        messages = [event["message"] for event in events]
        self.assertIn("Server Shut Down.", messages)
        self.assertIn("line user liz joined", messages)
        (ending,) = [event for event in events if event.get("reason") == "line-too-long"]
        self.assertEqual(
            (ending["level"], ending["namespace"], ending["option"], ending["limit"]),
            ("warn", "chatd.bounded.BoundedTransport", "max-line-length", 16),
        )
        self.assertIn("IPv4Address(type='TCP', host='127.0.0.1'", ending["peer"])
        self.assertIn("over --max-line-length 16", ending["message"])
        # Scrapes and health checks are not logged.
        self.assertEqual([m for m in messages if "GET /" in m], [])
        self.assertIn(f"metrics on 127.0.0.1:{metrics_port}: /metrics and /healthz", messages)

    def test_standard_output(self) -> None:
        """C{twistd -n chatd --log-format json}: every line of its output is JSON."""
        self.check(*self.run_chatd(logfile=False))

    def test_log_file(self) -> None:
        """With twistd's C{--logfile}, the file is JSON."""
        self.check(*self.run_chatd(logfile=True))


class WebSocketTests(SynchronousTestCase):
    def test_counted_as_websocket(self) -> None:
        directory = temporary_directory(self)
        chatd = Twistd(self, directory, "--port", f"tcp:0:{LOOPBACK}",
                       "--web", f"tcp:0:{LOOPBACK}", web=True)
        (web_port,) = [int(port) for kind, port in chatd.ports.items()
                       if kind not in ("MetricsSite", "ChatFactory")]
        sock = socket.create_connection(("127.0.0.1", web_port), timeout=TIMEOUT)
        self.addCleanup(sock.close)
        ws = WSConnection(ConnectionType.CLIENT)
        sock.sendall(ws.send(Request(host=f"127.0.0.1:{web_port}", target="/ws")))
        received, accepted = "", False
        while "!users" not in received:
            data = sock.recv(65536)
            self.assertTrue(data, "closed by the server")
            ws.receive_data(data)
            for event in ws.events():
                if isinstance(event, AcceptConnection):
                    accepted = True
                    sock.sendall(ws.send(TextMessage(data="!nick webby\n")))
                elif isinstance(event, TextMessage):
                    received += event.data
        self.assertTrue(accepted)
        got = chatd.scrape()
        self.assertEqual(value(got, "chatd_connections", protocol="line", transport="websocket"), 1)
        self.assertEqual(value(got, "chatd_connections", protocol="line", transport="tcp"), 0)
        self.assertEqual(
            value(got, "chatd_commands_total", protocol="line", command="nick", result="ok"), 1
        )
        sock.close()
        got = eventually(
            chatd.scrape,
            lambda got: value(got, "chatd_connections", protocol="line", transport="websocket") == 0,
            "the WebSocket connection to be gone",
        )
        self.assertEqual(value(got, "chatd_connections_closed_total", reason="client-closed"), 1)
