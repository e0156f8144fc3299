"""The twistd plugin's options and service: C{twistd -n chatd --port tcp:5000}."""

from __future__ import annotations

from typing import Any

from twisted.application import strports
from twisted.application.service import MultiService
from twisted.internet.interfaces import IReactorTime
from twisted.python import usage

from chatd.database import UnusableDatabase, open_database
from chatd.factory import ChatFactory
from chatd.hub import Hub
from chatd.rules import Limits
from chatd.store import MemoryStore, SqliteStore, Store, ThreadWorker

# PyChat's default port and ASVT-chat's, so both clients work unchanged.
DEFAULT_PORTS = ("tcp:5000", "tcp:31337")

_LIMITS = Limits()


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = (
        "Serve PyChat's ! line protocol and ASVT-chat's binary protocol on one "
        "hub. Every --port serves both; with none, chatd listens on "
        + " and ".join(DEFAULT_PORTS)
        + "."
    )
    optParameters: list[list[Any]] = [
        ["max-name-length", None, _LIMITS.max_name_length,
         "Most characters in a user name.", int],
        ["max-message-length", None, _LIMITS.max_message_length,
         "Most characters in a message text.", int],
        ["max-line-length", None, _LIMITS.max_line_length,
         "Most bytes in a line of the line protocol.", int],
        ["line-flush", None, _LIMITS.line_flush,
         "Seconds after which an unterminated line counts as complete.", float],
        ["max-frame-length", None, _LIMITS.max_frame_length,
         "Most bytes in a frame of the binary protocol.", int],
        ["database", None, None,
         "SQLite file that keeps the binary users and their mail across "
         "restarts (created if missing); without it they live in memory only."],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["ports"] = []

    def opt_port(self, description: str) -> None:
        """Listen on this endpoint (tcp:5000, ssl:..., unix:...); repeatable."""
        self["ports"].append(description)

    opt_p = opt_port

    def postOptions(self) -> None:
        if not self["ports"]:
            self["ports"] = list(DEFAULT_PORTS)
        for name, least in [
            ("max-name-length", 1),
            ("max-message-length", 1),
            ("max-line-length", 16),
            ("max-frame-length", 8),
        ]:
            if self[name] < least:
                raise usage.UsageError(f"--{name} must be at least {least}")
        if self["line-flush"] <= 0:
            raise usage.UsageError("--line-flush must be more than 0")
        if self["database"] == "":
            raise usage.UsageError("--database needs a file name")

    def limits(self) -> Limits:
        return Limits(
            max_name_length=self["max-name-length"],
            max_message_length=self["max-message-length"],
            max_line_length=self["max-line-length"],
            line_flush=self["line-flush"],
            max_frame_length=self["max-frame-length"],
        )


def makeService(config: Options, reactor: IReactorTime | None = None) -> MultiService:
    """One hub, served on every endpoint of C{config["ports"]}."""
    if reactor is None:
        from twisted.internet import reactor as _reactor

        reactor = _reactor  # type: ignore[assignment]
    top = MultiService()
    store: Store = MemoryStore()
    if config["database"] is not None:
        store = _sqlite_store(config["database"], reactor)
        # Before the ports, so that it is started first.
        store.setServiceParent(top)
    factory = ChatFactory(Hub(config.limits(), store), reactor)  # type: ignore[arg-type]
    for description in config["ports"]:
        strports.service(description, factory, reactor=reactor).setServiceParent(top)
    return top


def _sqlite_store(path: str, reactor: IReactorTime) -> SqliteStore:
    try:
        db = open_database(path)
    except UnusableDatabase as e:
        # twistd prints this and exits 1: one readable line, not a traceback.
        raise SystemExit(f"chatd: {e}")
    return SqliteStore(db, reactor, ThreadWorker(reactor))  # type: ignore[arg-type]
