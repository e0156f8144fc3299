"""The twistd plugin's options and service: C{twistd -n chatd --port tcp:5000}."""

from __future__ import annotations

from dataclasses import fields
from typing import TYPE_CHECKING, Any

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IAddress, IReactorTime
from twisted.logger import ILogObserver, Logger
from twisted.python import usage
from twisted.python.components import Componentized

from chatd.database import UnusableDatabase, open_database
from chatd.delivery import LocalDelivery
from chatd.factory import ChatFactory
from chatd.hub import Hub
from chatd.jsonlog import json_observer, twistd_log_file
from chatd.listening import Listening, page_address, where
from chatd.mailboxes import LocalMailboxes
from chatd.names import LocalNames
from chatd.rules import Limits
from chatd.store import CommitReport, MemoryStore, SqliteStore, Store, ThreadWorker
from chatd.webpage import web_site
from chatd.websocket import parse_origin

# psycopg is an extra: chatd.cluster loads it only for a postgresql:// --database.
from chatd.postgres import is_postgres

if TYPE_CHECKING:
    from chatd.metrics import Metrics

# PyChat's default port and ASVT-chat's, so both clients work unchanged.
DEFAULT_PORTS = ("tcp:5000", "tcp:31337")
# The web page and its WebSocket; "--web none" (or --no-web) turns it off.
DEFAULT_WEB = ("tcp:8080",)
NO_WEB = "none"

_LIMITS = Limits()


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = (
        "Serve PyChat's ! line protocol and ASVT-chat's binary protocol on one "
        "hub. Every --port serves both; with none, chatd listens on "
        + " and ".join(DEFAULT_PORTS)
        + ". Every --web serves the web page at / and both protocols over "
        "WebSocket at /ws; with none, chatd serves them on "
        + " and ".join(DEFAULT_WEB)
        + "."
    )
    optFlags = [
        ["no-web", None, "Serve no web page (the same as --web none)."],
    ]
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
        ["max-connections", None, _LIMITS.max_connections,
         "Most connections served at once; more are told the server is full.", int],
        ["max-connections-per-host", None, _LIMITS.max_connections_per_host,
         "Most connections served at once from one peer host.", int],
        ["handshake-timeout", None, _LIMITS.handshake_timeout,
         "Seconds a connection has to send !nick or register.", float],
        ["idle-timeout", None, _LIMITS.idle_timeout,
         "Seconds a registered binary connection may be silent.", float],
        ["command-rate", None, _LIMITS.command_rate,
         "Commands a second one connection may send past its burst; more wait.", float],
        ["command-burst", None, _LIMITS.command_burst,
         "Commands one connection may send at once before the rate applies.", int],
        ["max-input-backlog", None, _LIMITS.max_input_backlog,
         "Most bytes held unparsed for a client over the command rate.", int],
        ["max-output-backlog", None, _LIMITS.max_output_backlog,
         "Most bytes a client may leave unread before it is dropped.", int],
        ["max-binary-users", None, _LIMITS.max_binary_users,
         "Most registered binary users.", int],
        ["max-binary-users-per-host", None, _LIMITS.max_binary_users_per_host,
         "Most registered binary users from one peer host.", int],
        ["mailbox-size", None, _LIMITS.mailbox_size,
         "Most messages queued for one binary user.", int],
        ["mailbox-share", None, _LIMITS.mailbox_share,
         "Most messages from one sender queued for one binary user; "
         "more are refused with mailbox-full.", int],
        ["mailbox-host-share", None, _LIMITS.mailbox_host_share,
         "Most messages from one peer host, under all its names, queued for one "
         "binary user; more are refused with mailbox-full.", int],
        ["broadcast-rate", None, _LIMITS.broadcast_rate,
         "Broadcasts (!sendmsg, sendall) a second one peer host may send past "
         "its burst, over all its connections; more wait.", float],
        ["broadcast-burst", None, _LIMITS.broadcast_burst,
         "Broadcasts one peer host may send at once before the rate applies; "
         "reconnecting does not renew it.", int],
        ["close-grace", None, _LIMITS.close_grace,
         "Seconds a closing connection has to take its last bytes.", float],
        ["database", None, None,
         "SQLite file that keeps the binary users and their mail across "
         "restarts (created if missing); or a PostgreSQL URI "
         "(postgresql://USER:PASSWORD@HOST:PORT/DB): every chatd given the same "
         "one is a node of one server. Without it all lives in memory only."],
        ["node-lease", None, 10.0,
         "With a PostgreSQL --database: seconds within which a dead node's line "
         "users are freed; a node cut off from the database drops its own after "
         "three fifths of it.", float],
        ["metrics", None, None,
         "Endpoint serving Prometheus metrics at /metrics and health at /healthz, "
         "e.g. tcp:9100:interface=127.0.0.1; off by default."],
        ["log-format", None, "text",
         "How the log is written: text, or json (one JSON object per line)."],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["ports"] = []
        self["web"] = []
        self["web-origins"] = []

    def opt_web(self, description: str) -> None:
        """Serve the web page and WebSocket here (ssl: is https); repeatable; none: off."""
        self["web"].append(description)

    def opt_web_origin(self, origin: str) -> None:
        """Let pages from this origin (https://host[:port]) open the WebSocket too; repeatable."""
        try:
            parse_origin(origin)
        except ValueError as e:
            raise usage.UsageError(f"--web-origin: {e}")
        self["web-origins"].append(origin)

    def opt_port(self, description: str) -> None:
        """Listen on this endpoint (tcp:5000, ssl:..., unix:...); repeatable."""
        self["ports"].append(description)

    opt_p = opt_port

    def postOptions(self) -> None:
        if not self["ports"]:
            self["ports"] = list(DEFAULT_PORTS)
        if self["no-web"] or NO_WEB in self["web"]:
            if any(web != NO_WEB for web in self["web"]):
                raise usage.UsageError("--web none (or --no-web) cannot go with another --web")
            self["web"] = []
        elif not self["web"]:
            self["web"] = list(DEFAULT_WEB)
        for name, least in [
            ("max-name-length", 1),
            ("max-message-length", 1),
            ("max-line-length", 16),
            ("max-frame-length", 8),
            ("max-connections", 1),
            ("max-connections-per-host", 1),
            ("command-burst", 1),
            ("max-input-backlog", self.limits().whole_command()),
            ("max-output-backlog", 1),
            ("max-binary-users", 1),
            ("max-binary-users-per-host", 1),
            ("mailbox-size", 1),
            ("mailbox-share", 1),
            ("mailbox-host-share", 1),
            ("broadcast-burst", 1),
        ]:
            if self[name] < least:
                raise usage.UsageError(f"--{name} must be at least {least}")
        for name in [
            "line-flush",
            "handshake-timeout",
            "idle-timeout",
            "command-rate",
            "broadcast-rate",
            "close-grace",
        ]:
            if self[name] <= 0:
                raise usage.UsageError(f"--{name} must be more than 0")
        if self["database"] == "":
            raise usage.UsageError("--database needs a file name or a postgresql:// URI")
        if not 1 <= self["node-lease"] <= 3600:
            raise usage.UsageError("--node-lease must be between 1 and 3600 seconds")
        if self["metrics"] == "":
            raise usage.UsageError("--metrics needs an endpoint")
        if self["log-format"] not in ("text", "json"):
            raise usage.UsageError("--log-format must be text or json")

    def limits(self) -> Limits:
        return Limits(**{f.name: self[f.name.replace("_", "-")] for f in fields(Limits)})


class Draining(MultiService):
    """Ends every connection when the server stops, so that it exits promptly.

    Its children (the metrics listener) stop once the connections are gone,
    so that C{/healthz} says it is shutting down meanwhile.
    """

    def __init__(self, factory: ChatFactory) -> None:
        super().__init__()
        self.factory = factory

    def stopService(self) -> Deferred[None]:
        d = self.factory.shutdown()
        d.addCallback(lambda _: MultiService.stopService(self))
        return d


class ChatService(MultiService):
    """chatd's top service; handed to twistd's application, it says how to log."""

    # What the log is written with; None for twistd's own text log.
    log_observer: ILogObserver | None = None

    def setServiceParent(self, parent: Any) -> Any:
        # twistd starts its log after making the service, with the
        # application's ILogObserver if it has one, as a .tac file can set.
        if self.log_observer is not None and isinstance(parent, Componentized):
            parent.setComponent(ILogObserver, self.log_observer)
        return super().setServiceParent(parent)


def makeService(config: Options, reactor: IReactorTime | None = None) -> MultiService:
    """One hub, served on every endpoint of C{config["ports"]}."""
    if reactor is None:
        from twisted.internet import reactor as _reactor

        reactor = _reactor  # type: ignore[assignment]
    top = ChatService()
    if config["log-format"] == "json":
        out = twistd_log_file(getattr(config, "parent", None))
        if out is not None:
            top.log_observer = json_observer(out)
    metrics: Metrics | None = None
    if config["metrics"] is not None:
        # Imported only when asked for: prometheus_client and twisted.web
        # are 3.6 MB of memory a server without --metrics need not hold.
        from chatd.metrics import Metrics

        metrics = Metrics(reactor, database=config["database"] is not None)
    report = metrics.store_report if metrics is not None else None
    # The hub's parts: the PostgreSQL set for a node of several, or the
    # in-process set, its mail journaled to memory or to SQLite.
    store: Store = MemoryStore()
    if config["database"] is not None and is_postgres(config["database"]):
        hub: Hub = _cluster_hub(config, reactor, top, report)
    else:
        if config["database"] is not None:
            sqlite = _sqlite_store(config["database"], reactor, report)
            # Before the ports, so that it is started first.
            sqlite.setServiceParent(top)
            store = sqlite
        hub = _local_hub(config.limits(), store, reactor)
    factory = ChatFactory(hub, reactor)  # type: ignore[arg-type]
    # Before the ports, so stopped after them: they stop accepting first.
    draining = Draining(factory)
    draining.setServiceParent(top)
    if metrics is not None:
        metrics.watch(factory)
        metrics.service(config["metrics"], reactor).setServiceParent(draining)
    for description in config["ports"]:
        Listening(reactor, description, factory, _chat_listening).setServiceParent(top)
    if config["web"]:
        site = web_site(factory, config["web-origins"], config.limits().handshake_timeout)
        for description in config["web"]:
            Listening(reactor, description, site, _web_listening).setServiceParent(top)
    return top


_log = Logger(namespace="chatd")


def _chat_listening(description: str, address: IAddress) -> None:
    _log.info("chat (line and binary protocols) on {where}", where=where(address))


def _web_listening(description: str, address: IAddress) -> None:
    page = page_address(description, address)
    _log.info(
        "web page on {where}{at}, its WebSocket at /ws",
        where=where(address),
        at=f": open {page}" if page else "",
    )


def _sqlite_store(
    path: str, reactor: IReactorTime, report: CommitReport | None = None
) -> SqliteStore:
    try:
        db = open_database(path)
    except UnusableDatabase as e:
        # twistd prints this and exits 1: one readable line, not a traceback.
        raise SystemExit(f"chatd: {e}")
    return SqliteStore(db, reactor, ThreadWorker(reactor), report)  # type: ignore[arg-type]


def _local_hub(limits: Limits, store: Store, reactor: IReactorTime) -> Hub:
    """A server in one process: the hub's in-process set of parts."""
    return Hub(
        limits,
        clock=reactor,
        names=LocalNames(),
        delivery=LocalDelivery(reactor),
        mailboxes=LocalMailboxes(store),
    )


def _cluster_hub(
    config: Options, reactor: IReactorTime, top: MultiService, report: CommitReport | None
) -> Hub:
    """A node of the server whose state is in the PostgreSQL C{--database}:
    the hub's PostgreSQL set of parts, and the node's lease."""
    from chatd import postgres
    from chatd.cluster import node_hub

    uri = config["database"]
    try:
        postgres.prepare(uri)
        users = postgres.load_users(uri)
    except postgres.UnusableDatabase as e:
        raise SystemExit(f"chatd: {e}")
    engine = postgres.Engine(uri, reactor, report)
    # Before the ports and the node, so that it is stopped after them.
    engine.setServiceParent(top)
    hub, node = node_hub(config.limits(), engine, reactor, config["node-lease"])
    # The node serves knowing every user; its listener catches up from there.
    node.names.snapshot(users)
    node.setServiceParent(top)
    return hub
