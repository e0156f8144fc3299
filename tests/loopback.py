"""Real sockets on 127.0.0.1: chatd on an ephemeral port, and clients that wait for bytes."""

from __future__ import annotations

import os
import re
import struct
import sys
from typing import Any, Callable

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol, serverFromString
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import ProcessProtocol, Protocol
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from chatd.factory import ChatFactory
from chatd.hub import Hub
from chatd.rules import Limits
from tests.support import parse_frames

# How long a test waits for bytes that should come at once.
PATIENCE = 5.0
# The checkout these tests belong to, for a chatd run as a child process.
CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Peer(Protocol):
    """A client on a real socket: keeps what it receives; waits for what it expects."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.gone: Deferred[None] = Deferred()
        self._waits: list[tuple[Callable[[bytes], bool], Deferred[bytes]]] = []

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        for wait in list(self._waits):
            predicate, d = wait
            if predicate(bytes(self.received)):
                self._waits.remove(wait)
                d.callback(bytes(self.received))

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.gone.callback(None)

    @property
    def closed(self) -> bool:
        return self.gone.called

    def send(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def until(self, predicate: Callable[[bytes], bool], timeout: float = PATIENCE) -> Deferred[bytes]:
        """Fires with everything received once C{predicate} holds of it."""
        d: Deferred[bytes] = Deferred()
        if predicate(bytes(self.received)):
            d.callback(bytes(self.received))
            return d
        self._waits.append((predicate, d))
        return d.addTimeout(timeout, reactor)  # type: ignore[arg-type]

    def until_received(self, needle: bytes, timeout: float = PATIENCE) -> Deferred[bytes]:
        return self.until(lambda got: needle in got, timeout)

    def until_gone(self, timeout: float = PATIENCE) -> Deferred[None]:
        return until_fired(self.gone, timeout)

    def lines(self) -> list[str]:
        return bytes(self.received).decode("utf-8").splitlines()

    def frames(self) -> list[bytes]:
        return parse_frames(bytes(self.received))

    @staticmethod
    def first(data: bytes) -> bytes:
        """The payload of the first frame in C{data}, which must be whole."""
        (size,) = struct.unpack("<I", data[:4])
        return data[4 : 4 + size]

    def take(self) -> bytes:
        data = bytes(self.received)
        self.received.clear()
        return data


def until_fired(event: Deferred[None], timeout: float = PATIENCE) -> Deferred[None]:
    """Fires once C{event} has, or fails after C{timeout} seconds; C{event} is left as it is."""
    d: Deferred[None] = Deferred()

    def follow(result: object) -> object:
        if not d.called:
            d.callback(None)
        return result

    event.addBoth(follow)
    return d.addTimeout(timeout, reactor)  # type: ignore[arg-type]


def frame_count(n: int) -> Callable[[bytes], bool]:
    """A predicate: at least C{n} whole frames have arrived."""

    def enough(data: bytes) -> bool:
        count = 0
        while len(data) >= 4:
            (size,) = struct.unpack("<I", data[:4])
            if len(data) < 4 + size:
                break
            data = data[4 + size :]
            count += 1
        return count >= n

    return enough


class Loopback:
    """One chatd factory listening on 127.0.0.1, torn down with the test."""

    def __init__(self, case: TestCase, **limits: Any) -> None:
        self.case = case
        self.factory = ChatFactory(Hub(Limits(**limits), clock=reactor), reactor)  # type: ignore[arg-type]
        self.port = 0

    async def listen(self, description: str = "tcp:0:interface=127.0.0.1") -> Loopback:
        port = await serverFromString(reactor, description).listen(self.factory)
        self.port = port.getHost().port
        # Cleanups run last first: clients go, then connections drain, then the port.
        self.case.addCleanup(port.stopListening)
        self.case.addCleanup(self.factory.shutdown)
        return self

    async def connect(
        self, source: str = "127.0.0.1", endpoint: IStreamClientEndpoint | None = None
    ) -> Peer:
        if endpoint is None:
            endpoint = TCP4ClientEndpoint(
                reactor, "127.0.0.1", self.port, bindAddress=(source, 0)
            )
        peer = await connectProtocol(endpoint, Peer())
        self.case.addCleanup(_abort, peer)
        return peer


def _abort(peer: Peer) -> Deferred[None]:
    if not peer.closed and peer.transport is not None:
        peer.transport.abortConnection()  # type: ignore[attr-defined]
    return peer.gone


class Chatd(ProcessProtocol):
    """C{twistd -n chatd} as a child process, on an ephemeral port it reports."""

    def __init__(self) -> None:
        self.output = b""
        self.listening: Deferred[int] = Deferred()
        # Fires with the exit: ProcessDone, or ProcessTerminated and its signal.
        self.ended: Deferred[Exception] = Deferred()

    def outReceived(self, data: bytes) -> None:
        self.output += data
        found = re.search(rb"starting on (\d+)", self.output)
        if found and not self.listening.called:
            self.listening.callback(int(found.group(1)))

    errReceived = outReceived

    def processEnded(self, reason: Failure) -> None:
        self.ended.callback(reason.value)  # type: ignore[arg-type]


async def spawn_chatd(case: TestCase, *options: str) -> tuple[Chatd, int]:
    """Start chatd from this checkout under twistd; its process protocol and port."""
    chatd = Chatd()
    argv = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
            "-n", "--pidfile=", "--logfile=-", "chatd",
            "--port", "tcp:0:interface=127.0.0.1", *options]  # fmt: skip
    if not any(option.startswith("--web") for option in options):
        # Not on the default web port, which other tests and servers may hold.
        argv.append("--no-web")
    env = {**os.environ, "PYTHONPATH": CHECKOUT}
    process = reactor.spawnProcess(chatd, sys.executable, argv, env=env, path=CHECKOUT)  # type: ignore[attr-defined]

    def kill() -> Deferred[Exception]:
        if not chatd.ended.called:
            process.signalProcess("KILL")
        return chatd.ended

    case.addCleanup(kill)
    port = await chatd.listening.addTimeout(10, reactor)  # type: ignore[arg-type]
    return chatd, port
