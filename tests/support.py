"""Shared test fixtures: a server on StringTransports, driven by a task.Clock."""

from __future__ import annotations

import shutil
import sqlite3
import struct
import tempfile
from typing import Any, Callable, TypeVar

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail, maybeDeferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from chatd.factory import ChatFactory
from chatd.hub import Hub
from chatd.rules import Limits
from chatd.store import Store

_T = TypeVar("_T")


def frame(payload: bytes) -> bytes:
    """One binary-protocol frame."""
    return struct.pack("<I", len(payload)) + payload


def command(*parts: bytes) -> bytes:
    """A binary command: its name and argument frames, back to back."""
    return b"".join(frame(part) for part in parts)


def parse_frames(data: bytes) -> list[bytes]:
    """Split a server's binary output into frame payloads; fail on a partial frame."""
    out = []
    while data:
        if len(data) < 4:
            raise AssertionError(f"partial length prefix: {data!r}")
        (n,) = struct.unpack("<I", data[:4])
        if len(data) < 4 + n:
            raise AssertionError(f"partial frame: {data!r}")
        out.append(data[4 : 4 + n])
        data = data[4 + n :]
    return out


class Server:
    """One chatd factory and clock, with connections made over StringTransports."""

    def __init__(
        self,
        store: Store | None = None,
        clock: Clock | None = None,
        hold_turns: bool = False,
        **limits: Any,
    ) -> None:
        """
        @param hold_turns: hold output to the end of the clock's turn, as the
            running server does (C{clock.advance(0)} ends a turn); by default
            each read's output is written at the end of that read.
        """
        self.clock = clock or Clock()
        self.hub = Hub(Limits(**limits), store, self.clock if hold_turns else None)
        self.factory = ChatFactory(self.hub, self.clock)

    def connect(self, host: str = "127.0.0.1", port: int = 40000) -> Client:
        return Client(self, host, port)


class Client:
    """A client's view of one connection: bytes in, bytes out."""

    def __init__(self, server: Server, host: str, port: int) -> None:
        addr = IPv4Address("TCP", host, port)
        self.server = server
        self.protocol = server.factory.buildProtocol(addr)
        self.transport = StringTransport(peerAddress=addr)
        self.protocol.makeConnection(self.transport)

    def send(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    def take(self) -> bytes:
        """Everything the server wrote since the last take."""
        data = self.transport.value()
        self.transport.clear()
        return data

    def lines(self) -> list[str]:
        """What the server wrote since the last take, as LF-ended lines."""
        data = self.take().decode("utf-8")
        assert data == "" or data.endswith("\n"), data
        return data.splitlines()

    def frames(self) -> list[bytes]:
        return parse_frames(self.take())

    @property
    def closed(self) -> bool:
        return bool(self.transport.disconnecting)

    def close(self) -> None:
        """The client goes away without a word."""
        from twisted.internet.error import ConnectionDone
        from twisted.python.failure import Failure

        self.protocol.connectionLost(Failure(ConnectionDone()))


def temporary_directory(case: SynchronousTestCase) -> str:
    """A new directory outside the checkout, removed after the test.

    (Under pytest, C{mktemp} makes its paths below the current directory.)
    """
    directory = tempfile.mkdtemp(prefix="chatd-test-")
    case.addCleanup(shutil.rmtree, directory, ignore_errors=True)
    return directory


class InlineWorker:
    """Runs database work at once, in the test's thread; can be told to fail."""

    def __init__(self) -> None:
        self.runs = 0
        self.failures = 0

    def run(self, work: Callable[[], _T]) -> Deferred[_T]:
        self.runs += 1
        if self.failures:
            self.failures -= 1
            return fail(sqlite3.OperationalError("database or disk is full"))
        return maybeDeferred(work)

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass


class HeldWorker(InlineWorker):
    """Holds database work until the test releases it."""

    def __init__(self) -> None:
        super().__init__()
        self.held: list[tuple[Callable[[], object], Deferred[object]]] = []

    def run(self, work: Callable[[], _T]) -> Deferred[_T]:
        self.runs += 1
        d: Deferred[_T] = Deferred()
        self.held.append((work, d))  # type: ignore[arg-type]
        return d

    def release(self, error: Exception | None = None) -> None:
        """Run the held work, or fail it with C{error} without running it."""
        held, self.held = self.held, []
        for work, d in held:
            if error is None:
                d.callback(work())
            else:
                d.errback(error)
