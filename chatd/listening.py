"""Listening on an endpoint string, and saying where in the log."""

from __future__ import annotations

from typing import Callable

from twisted.application.service import Service
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IAddress, IListeningPort
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure


def where(address: IAddress) -> str:
    """A listening address as a person reads it: C{0.0.0.0:5000}, C{[::1]:8080}, a path."""
    host = getattr(address, "host", None)
    port = getattr(address, "port", None)
    if host is None or port is None:
        return str(getattr(address, "name", None) or address)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def page_address(description: str, address: IAddress) -> str | None:
    """The URL a browser opens for a web endpoint, or None where it has none (a Unix socket)."""
    host = getattr(address, "host", None)
    port = getattr(address, "port", None)
    if host is None or port is None:
        return None
    if host in ("0.0.0.0", "::"):
        host = "localhost"
    elif ":" in host:
        host = f"[{host}]"
    scheme = "https" if description.split(":", 1)[0] in ("ssl", "tls") else "http"
    return f"{scheme}://{host}:{port}/"


class Listening(Service):
    """Listens on one endpoint while running, and logs where once it does.

    Like C{strports.service}, a port that cannot be bound fails the start,
    rather than leaving a process that serves nothing.
    """

    log = Logger()

    def __init__(
        self,
        reactor: object,
        description: str,
        factory: Factory,
        announce: Callable[[str, IAddress], None],
    ) -> None:
        self.reactor = reactor
        self.description = description
        self.factory = factory
        self.announce = announce
        self.port: IListeningPort | None = None
        self._listening: Deferred[IListeningPort] | None = None

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        endpoint = serverFromString(self.reactor, self.description)
        self._listening = endpoint.listen(self.factory)
        failed: list[Failure] = []
        self._listening.addCallbacks(self._listened, failed.append)
        if failed:
            # Bound at once or not at all, as TCP, SSL and Unix ports are.
            failed[0].raiseException()

    def startService(self) -> None:
        super().startService()
        if self._listening is None:
            self.privilegedStartService()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        listening, self._listening = self._listening, None
        port, self.port = self.port, None
        if port is None:
            if listening is not None:
                listening.cancel()
            return succeed(None)
        return maybeDeferred(port.stopListening)

    def _listened(self, port: IListeningPort) -> IListeningPort:
        self.port = port
        self.announce(self.description, port.getHost())
        return port
