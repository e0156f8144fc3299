"""Blocking socket clients that talk exactly as the two seed clients do.

PyChat's client (nadjiel/py-chat C{src/client.py}) sends each command in one
C{send()} with no line end and reads answers with C{recv(1024)}. ASVT-chat's
client (1MiKHalyCH1/ASVT-chat C{client/command_utils.py}) sends every frame in
its own C{send()} and reads a reply frame with C{recv(4)}, then C{recv(n)}, so
it relies on every reply arriving whole.

Every socket has a timeout and every loop a bound in tries and in time, so a
test that goes wrong fails instead of hanging. The clients block: a test whose
server shares the process runs them in a thread (C{deferToThread}).
"""

from __future__ import annotations

import socket
import struct
import time
from typing import Iterator, TypeVar, Union

from twisted.trial.unittest import SynchronousTestCase

from tests.support import frame

# A Unix socket's path, or a TCP (host, port).
Address = Union[str, tuple[str, int]]

# Seconds one wait may take before the test fails.
TIMEOUT = 5.0
# Most reads or polls one wait may take.
TRIES = 100
# Seconds between two polls of a binary user's mailbox.
POLL_INTERVAL = 0.02

ADDED = "Message added to storage!"
LOGGED_OUT = "U've been successfully logouted"


def connect(address: Address) -> socket.socket:
    """A connected stream socket with a timeout: Unix for a path, else TCP."""
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(TIMEOUT)
    try:
        sock.connect(address)
    except OSError:
        sock.close()
        raise
    return sock


def attempts(timeout: float = TIMEOUT, tries: int = TRIES) -> Iterator[None]:
    """Up to C{tries} turns of a loop, all within C{timeout} seconds."""
    deadline = time.monotonic() + timeout
    for _ in range(tries):
        if time.monotonic() > deadline:
            return
        yield


_C = TypeVar("_C", bound="_Client")


class _Client:
    """A connected socket, closed at the end of a C{with} block."""

    def __init__(self, address: Address) -> None:
        self.sock = connect(address)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self: _C) -> _C:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class PyChatClient(_Client):
    """PyChat's client: one C{send()} per command, no line end, C{recv(1024)}."""

    def __init__(self, address: Address) -> None:
        super().__init__(address)
        self._unread = b""

    def send(self, command: str) -> None:
        self.sock.send(command.encode("utf-8"))

    def nick(self, name: str) -> list[str]:
        """Take C{name}: the first command; the server's answer."""
        self.send(f"!nick {name}")
        return self.lines(1)

    def lines(self, count: int) -> list[str]:
        """The next C{count} lines the server sends."""
        for _ in attempts():
            if self._unread.count(b"\n") >= count:
                break
            data = self.sock.recv(1024)
            if not data:
                raise AssertionError(f"server closed; unread: {self._unread!r}")
            self._unread += data
        else:
            raise AssertionError(f"no {count} lines in time; unread: {self._unread!r}")
        *lines, self._unread = self._unread.split(b"\n", count)
        return [line.decode("utf-8") for line in lines]


class ASVTClient(_Client):
    """ASVT-chat's client: a C{send()} per frame; C{recv(4)}, then C{recv(n)}."""

    def command(self, *parts: bytes) -> None:
        for part in parts:
            self.sock.send(frame(part))

    def read(self) -> str:
        """One reply frame, read in the two C{recv()} calls the seed client makes."""
        head = self.sock.recv(4)
        if len(head) != 4:
            raise AssertionError(f"expected a 4-byte length, got {head!r}")
        (length,) = struct.unpack("<I", head)
        body = self.sock.recv(length)
        if len(body) != length:
            raise AssertionError(f"expected {length} bytes in one recv, got {body!r}")
        return body.decode("utf-8")

    def register(self, name: str) -> str:
        self.command(b"register", name.encode("utf-8"))
        return self.read()

    def users(self) -> list[str]:
        self.command(b"users")
        return [self.read() for _ in range(int(self.read()))]

    def send(self, receiver: str, text: str) -> str:
        self.command(b"send", receiver.encode("utf-8"), text.encode("utf-8"))
        return self.read()

    def sendall(self, text: str) -> str:
        self.command(b"sendall", text.encode("utf-8"))
        return self.read()

    def receive(self) -> list[tuple[str, str]]:
        """The mailbox: (sender, text) pairs, oldest first."""
        self.command(b"receive")
        return [(self.read(), self.read()) for _ in range(int(self.read()))]

    def receive_until(self, count: int) -> list[tuple[str, str]]:
        """Poll the mailbox, as an ASVT-chat user does, until C{count} messages came."""
        mail: list[tuple[str, str]] = []
        for _ in attempts():
            mail += self.receive()
            if len(mail) >= count:
                return mail
            time.sleep(POLL_INTERVAL)
        raise AssertionError(f"expected {count} messages in time, got {mail!r}")

    def logout(self) -> str:
        self.command(b"logout")
        return self.read()


def chat_across_protocols(
    test: SynchronousTestCase, line_address: Address, binary_address: Address
) -> None:
    """A PyChat user and an ASVT-chat user chat both ways, on one endpoint or two.

    The server must take an unterminated line as complete after its line
    flush: the PyChat client never ends one.
    """
    with PyChatClient(line_address) as alice, ASVTClient(binary_address) as bob:
        test.assertEqual(alice.nick("alice"), ["!users 1 alice"])
        test.assertEqual(bob.register("bob"), "Hello, bob")
        test.assertEqual(alice.lines(1), ["!joined bob"])
        test.assertEqual(bob.users(), ["alice", "bob"])

        # Nothing comes back to alice: bob polls until the message is there.
        alice.send("!sendmsg hi bob")
        test.assertEqual(bob.receive_until(1), [("alice", "hi bob")])

        test.assertEqual(bob.send("alice", "hi alice"), ADDED)
        test.assertEqual(alice.lines(1), ["!privmsg bob hi alice"])
        test.assertEqual(bob.sendall("hi all"), ADDED)
        test.assertEqual(alice.lines(1), ["!msg bob hi all"])

        alice.send("!poke bob")
        test.assertEqual(alice.lines(1), ["!poke alice bob"])
        test.assertEqual(bob.receive(), [("alice", "!poke alice bob")])

        test.assertEqual(bob.logout(), LOGGED_OUT)
        test.assertEqual(alice.lines(1), ["!left bob"])
