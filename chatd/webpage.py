"""chatd's web page: one Site, its files from package data at C{/}, the WebSocket at C{/ws}."""

from __future__ import annotations

from collections import Counter
from importlib.resources import files
from typing import TYPE_CHECKING, Any, Iterable

from twisted.internet.interfaces import IAddress
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath
from twisted.web.pages import notFound
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request, Site
from twisted.web.static import File

from chatd.rules import Limits
from chatd.websocket import ChatSocket

if TYPE_CHECKING:
    from chatd.factory import ChatFactory

# The page's own files only: no script, style or font from anywhere else,
# and the socket only to the server the page came from.
_SECURITY_HEADERS = {
    b"content-security-policy": (
        b"default-src 'self'; connect-src 'self'; img-src 'self' data:; "
        b"object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    ),
    b"x-content-type-options": b"nosniff",
    b"referrer-policy": b"no-referrer",
    # A new chatd's page is picked up at once, not after a cache expires.
    b"cache-control": b"no-cache",
}


def page_directory() -> FilePath[str]:
    """Where the page's files are: C{chatd/web} in the installed package."""
    return FilePath(str(files("chatd") / "web"))


class PageFiles(File):
    """The page's files: no directory listings, and the headers every file gets."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        # Module scripts must be served as JavaScript, whatever the system's mime.types say.
        self.contentTypes = {
            **self.contentTypes,
            ".js": "text/javascript; charset=utf-8",
            ".css": "text/css; charset=utf-8",
            ".html": "text/html; charset=utf-8",
            ".png": "image/png",
            ".svg": "image/svg+xml",
        }

    def directoryListing(self) -> IResource:
        return notFound()

    def render_GET(self, request: Request) -> bytes | int:
        for name, value in _SECURITY_HEADERS.items():
            request.setHeader(name, value)
        return super().render_GET(request)  # type: ignore[no-any-return]


class WebSite(Site):
    """A Site whose HTTP connections count against chatd's connection limits.

    They are counted apart from the chat connections, with the same
    numbers: one that becomes a WebSocket counts as a chat connection too,
    so the page cannot be used to hold more sockets than the limits allow.
    """

    # Not "log": HTTPFactory.log writes the access log.
    _log = Logger()
    # A line per start says little an operator needs.
    noisy = False

    def __init__(self, resource: Resource, limits: Limits, **kwargs: Any) -> None:
        super().__init__(resource, **kwargs)
        self.limits = limits
        self.open: Counter[str] = Counter()
        self._total = 0

    def buildProtocol(self, addr: IAddress) -> Protocol | None:
        host = str(getattr(addr, "host", None) or "local")
        if self._total >= self.limits.max_connections:
            self._log.warn("web server full: turning {host} away", host=host)
            return None
        if self.open[host] >= self.limits.max_connections_per_host:
            self._log.warn("host {host} has all its web connections: turning it away", host=host)
            return None
        protocol = super().buildProtocol(addr)
        if protocol is None:
            return None
        self.open[host] += 1
        self._total += 1
        lost = protocol.connectionLost

        def connectionLost(reason: Failure) -> None:
            self._forget(host)
            lost(reason)

        # On the connection's outermost protocol, which a WebSocket upgrade
        # leaves in place: it is told of the loss either way.
        protocol.connectionLost = connectionLost  # type: ignore[method-assign]
        return protocol  # type: ignore[no-any-return]

    def _forget(self, host: str) -> None:
        self._total -= 1
        self.open[host] -= 1
        if not self.open[host]:
            del self.open[host]


def web_site(factory: ChatFactory, origins: Iterable[str] = (), timeout: float = 60) -> Site:
    """The page and its socket, both serving C{factory}'s hub.

    @param origins: origins besides the page's own that may open the socket.
    @param timeout: seconds an HTTP connection may sit idle between requests.
    """
    root = PageFiles(page_directory().path)
    root.putChild(b"ws", ChatSocket(factory, origins))
    return WebSite(root, factory.hub.limits, timeout=timeout)
