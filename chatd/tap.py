"""The twistd plugin's options and service: C{twistd -n chatd --port tcp:5000}."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from twisted.application import strports
from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.python import usage

from chatd.database import UnusableDatabase, open_database
from chatd.factory import ChatFactory
from chatd.hub import Hub
from chatd.rules import Limits
from chatd.store import MemoryStore, SqliteStore, Store, ThreadWorker

# psycopg is an extra: chatd.cluster loads it only for a postgresql:// --database.
from chatd.postgres import is_postgres

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
            ("max-connections", 1),
            ("max-connections-per-host", 1),
            ("command-burst", 1),
            ("max-input-backlog", self.limits().whole_command()),
            ("max-output-backlog", 1),
            ("max-binary-users", 1),
            ("max-binary-users-per-host", 1),
            ("mailbox-size", 1),
            ("mailbox-share", 1),
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

    def limits(self) -> Limits:
        return Limits(**{f.name: self[f.name.replace("_", "-")] for f in fields(Limits)})


class Draining(Service):
    """Ends every connection when the server stops, so that it exits promptly."""

    def __init__(self, factory: ChatFactory) -> None:
        self.factory = factory

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return self.factory.shutdown()


def makeService(config: Options, reactor: IReactorTime | None = None) -> MultiService:
    """One hub, served on every endpoint of C{config["ports"]}."""
    if reactor is None:
        from twisted.internet import reactor as _reactor

        reactor = _reactor  # type: ignore[assignment]
    top = MultiService()
    store: Store = MemoryStore()
    if config["database"] is not None and is_postgres(config["database"]):
        hub: Hub = _cluster_hub(config, reactor, top)
    elif config["database"] is not None:
        store = _sqlite_store(config["database"], reactor)
        # Before the ports, so that it is started first.
        store.setServiceParent(top)
        hub = Hub(config.limits(), store, reactor)  # type: ignore[arg-type]
    else:
        hub = Hub(config.limits(), store, reactor)  # type: ignore[arg-type]
    factory = ChatFactory(hub, reactor)  # type: ignore[arg-type]
    # Before the ports, so stopped after them: they stop accepting first.
    Draining(factory).setServiceParent(top)
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


def _cluster_hub(config: Options, reactor: IReactorTime, top: MultiService) -> Hub:
    """A node of the server whose state is in the PostgreSQL C{--database}."""
    from chatd import postgres
    from chatd.cluster import ClusterHub, Node, new_node_id

    uri = config["database"]
    try:
        postgres.prepare(uri)
        users = postgres.load_users(uri)
    except postgres.UnusableDatabase as e:
        raise SystemExit(f"chatd: {e}")
    engine = postgres.Engine(uri, reactor)
    # Before the ports and the node, so that it is stopped after them.
    engine.setServiceParent(top)
    hub = ClusterHub(config.limits(), engine, reactor, new_node_id())
    # The node serves knowing every user; its listener catches up from there.
    hub.snapshot(users)
    Node(hub, engine, reactor, config["node-lease"]).setServiceParent(top)
    return hub
