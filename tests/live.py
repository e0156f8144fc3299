"""A real chatd on an ephemeral loopback port, and bounded waits, for client tests."""

from __future__ import annotations

import inspect
from typing import Any, Callable

from twisted.internet import reactor
from twisted.internet.defer import maybeDeferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort
from twisted.internet.task import deferLater
from twisted.protocols.policies import WrappingFactory
from twisted.trial.unittest import TestCase

from chatd.factory import ChatFactory
from chatd.hub import Hub

# How long any wait in these tests may take before it fails.
PATIENCE = 10.0


async def eventually(
    probe: Callable[[], Any], ok: Callable[[Any], bool], what: str, timeout: float = PATIENCE
) -> Any:
    """Call C{probe} until C{ok} holds for its result, for at most C{timeout} seconds.

    C{probe} may return an awaitable, such as a Deferred, to be awaited each time.
    """
    deadline = reactor.seconds() + timeout
    while True:
        value = probe()
        if inspect.isawaitable(value):
            value = await value
        if ok(value):
            return value
        if reactor.seconds() > deadline:
            raise AssertionError(f"waited {timeout} s for {what}; last saw:\n{value}")
        await deferLater(reactor, 0.05)


class LiveServer:
    """One chatd serving both protocols on 127.0.0.1, on a port the OS picked."""

    def __init__(self, listening: IListeningPort, connections: WrappingFactory) -> None:
        self._listening: IListeningPort | None = listening
        self._connections = connections
        self.port: int = listening.getHost().port  # type: ignore[misc]
        self.hub: Hub = connections.wrappedFactory.hub

    @classmethod
    async def start(cls, case: TestCase) -> LiveServer:
        """A server that C{case} stops when it ends."""
        hub = Hub(clock=reactor)  # type: ignore[arg-type]
        connections = WrappingFactory(ChatFactory(hub, reactor))
        endpoint = serverFromString(reactor, "tcp:0:interface=127.0.0.1")
        server = cls(await endpoint.listen(connections), connections)
        case.addCleanup(server.stop)
        return server

    async def go_away(self) -> None:
        """Stop listening and hang up on every client, as a server that dies does."""
        if self._listening is not None:
            listening, self._listening = self._listening, None
            await maybeDeferred(listening.stopListening)
        for connection in list(self._connections.protocols):
            connection.transport.loseConnection()
        await eventually(
            lambda: len(self._connections.protocols), lambda n: n == 0, "connections to close"
        )

    stop = go_away
