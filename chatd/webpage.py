"""chatd's web page: one Site, its files from package data at C{/}, the WebSocket at C{/ws}."""

from __future__ import annotations

from importlib.resources import files
from typing import TYPE_CHECKING, Iterable

from twisted.python.filepath import FilePath
from twisted.web.pages import notFound
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request, Site
from twisted.web.static import File

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


def web_site(factory: ChatFactory, origins: Iterable[str] = (), timeout: float = 60) -> Site:
    """The page and its socket, both serving C{factory}'s hub.

    @param origins: origins besides the page's own that may open the socket.
    @param timeout: seconds an HTTP connection may sit idle between requests.
    """
    root = PageFiles(page_directory().path)
    root.putChild(b"ws", ChatSocket(factory, origins))
    site = Site(root, timeout=timeout)
    # A line per request and per start says little an operator needs.
    site.noisy = False
    return site
