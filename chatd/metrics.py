"""What chatd tells an operator: Prometheus metrics at C{/metrics}, health at C{/healthz}.

Served with C{--metrics ENDPOINT} by twisted.web on the reactor thread: a
scrape reads the hub's and the factory's state between two events, never
half changed, and what it reads is counted as things happen (L{chatd.tally})
or counted on the spot from the state itself. The registry is the service's
own, not prometheus_client's global one, so one process can hold several
servers (as the tests do).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from twisted.application.service import MultiService, Service
from twisted.internet.interfaces import IAddress, IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from chatd import __version__, tally
from chatd.binary import COMMANDS as BINARY_COMMANDS
from chatd.line import COMMANDS as LINE_COMMANDS
from chatd.listening import Listening, where

if TYPE_CHECKING:
    from chatd.factory import ChatFactory

PROTOCOLS = ("line", "binary", "none")
TRANSPORTS = ("tcp", "tls", "unix", "websocket")
# Seconds: from a tenth of a millisecond (a commit, a timer on time) to ten.
BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
           0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# How often the reactor's lag is measured.
LAG_INTERVAL = 1.0


class Metrics:
    """One server's metrics and health, kept and read on the reactor thread."""

    def __init__(self, clock: IReactorTime, database: bool = False) -> None:
        """
        @param database: whether the server keeps a database, whose commits
            are then measured (through L{store_report}).
        """
        self.clock = clock
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.lag = Histogram(
            "chatd_reactor_lag_seconds",
            "How late a timer due every second ran.",
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.commit_seconds: Histogram | None = None
        self.store_failures: Counter | None = None
        if database:
            self.commit_seconds = Histogram(
                "chatd_store_commit_seconds",
                "Time to commit one group of changes to the database, successful commits.",
                buckets=BUCKETS,
                registry=self.registry,
            )
            self.store_failures = Counter(
                "chatd_store_failures",
                "Commits to the database that failed (each is tried again a second later).",
                registry=self.registry,
            )
        # Why the store cannot commit, from its last try; None once it can.
        self.store_error: str | None = None
        self._factory: ChatFactory | None = None

    def watch(self, factory: ChatFactory) -> None:
        """Report on the connections, users and mail of C{factory} and its hub."""
        self._factory = factory
        self.registry.register(_ChatCollector(factory))

    def store_report(self, seconds: float, error: BaseException | None) -> None:
        """Told by the store of every commit it tries (a L{chatd.store.CommitReport})."""
        if error is None:
            self.store_error = None
            if self.commit_seconds is not None:
                self.commit_seconds.observe(seconds)
            return
        self.store_error = " ".join(str(error).split()) or type(error).__name__
        if self.store_failures is not None:
            self.store_failures.inc()

    def problem(self) -> str | None:
        """Why chatd is not healthy, in one line; None while it serves and can commit."""
        if self._factory is not None and self._factory.stopping:
            return "shutting down"
        if self.store_error is not None:
            return f"store cannot commit: {self.store_error}"
        return None

    def scrape(self) -> bytes:
        """The metrics in Prometheus' text format."""
        return generate_latest(self.registry)

    def service(self, description: str, reactor: IReactorTime) -> MultiService:
        """Serve /metrics and /healthz on endpoint C{description}, and measure lag."""
        root = Resource()
        root.putChild(b"metrics", MetricsPage(self))
        root.putChild(b"healthz", HealthPage(self))
        top = MultiService()
        LagProbe(self.clock, self.lag.observe).setServiceParent(top)
        Listening(reactor, description, MetricsSite(root), _announce).setServiceParent(top)
        return top


_log = Logger(namespace="chatd")


def _announce(description: str, address: IAddress) -> None:
    _log.info("metrics on {where}: /metrics and /healthz", where=where(address))


class _ChatCollector:
    """The hub's and the factory's figures, read when scraped."""

    def __init__(self, factory: ChatFactory) -> None:
        self.factory = factory

    def collect(self) -> Iterable[Metric]:
        factory, hub = self.factory, self.factory.hub
        counts = factory.tally

        connections = GaugeMetricFamily(
            "chatd_connections",
            "Open connections, by protocol (none: no first byte yet) and transport.",
            labels=["protocol", "transport"],
        )
        open_ = factory.connection_counts()
        for key in _every(open_, [(p, t) for p in PROTOCOLS for t in TRANSPORTS]):
            connections.add_metric(list(key), open_.get(key, 0))
        yield connections

        line, binary, mail = hub.census()
        online = factory.online_binary_users()
        users = GaugeMetricFamily(
            "chatd_users",
            "Users, by protocol and state (offline: registered binary users with no connection).",
            labels=["protocol", "state"],
        )
        users.add_metric(["line", "online"], line)
        users.add_metric(["binary", "online"], online)
        users.add_metric(["binary", "offline"], binary - online)
        yield users

        closed = CounterMetricFamily(
            "chatd_connections_closed",
            "Connections ended, by reason.",
            labels=["reason"],
        )
        for reason in _every(counts.closed, tally.REASONS):
            closed.add_metric([reason], counts.closed.get(reason, 0))
        yield closed

        commands = CounterMetricFamily(
            "chatd_commands",
            "Commands run, by protocol, command and result.",
            labels=["protocol", "command", "result"],
        )
        for key in _every(counts.commands, _KNOWN_COMMANDS):
            commands.add_metric(key.split(" "), counts.commands.get(key, 0))
        yield commands

        deliveries = CounterMetricFamily(
            "chatd_deliveries",
            "Messages delivered to one user: pushed to a connection, or put in a mailbox.",
            labels=["route"],
        )
        deliveries.add_metric(["push"], counts.pushed)
        deliveries.add_metric(["mailbox"], counts.mailed)
        yield deliveries

        yield GaugeMetricFamily(
            "chatd_mailbox_messages", "Messages waiting in the mailboxes of binary users.", mail
        )
        yield CounterMetricFamily(
            "chatd_mailbox_full",
            "Messages not queued for a user because its mailbox had no room, one per user.",
            counts.mailbox_full,
        )
        build = GaugeMetricFamily("chatd_build_info", "chatd's version.", labels=["version"])
        build.add_metric([__version__], 1)
        yield build


_KNOWN_COMMANDS = [
    tally.command_key(protocol, command, result)
    for protocol, names in [
        ("line", sorted(LINE_COMMANDS)),
        ("binary", sorted(name.decode() for name in BINARY_COMMANDS)),
    ]
    for command in [*names, tally.UNKNOWN]
    for result in ("ok", "error")
]


def _every(seen: Iterable[Any], known: Iterable[Any]) -> list[Any]:
    """The label values always shown (as 0 until counted), then any others seen."""
    every = list(known)
    every += sorted(set(seen) - set(every))
    return every


class LagProbe(Service):
    """Measures how late a timer due every C{interval} seconds runs: the reactor's lag."""

    def __init__(
        self, clock: IReactorTime, observe: Callable[[float], None], interval: float = LAG_INTERVAL
    ) -> None:
        self.clock = clock
        self.observe = observe
        self.interval = interval
        self._due = 0.0
        self._call: IDelayedCall | None = None

    def startService(self) -> None:
        super().startService()
        self._schedule()

    def stopService(self) -> None:
        super().stopService()
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def _schedule(self) -> None:
        self._due = self.clock.seconds() + self.interval
        self._call = self.clock.callLater(self.interval, self._tick)

    def _tick(self) -> None:
        self.observe(max(0.0, self.clock.seconds() - self._due))
        self._schedule()


class MetricsPage(Resource):
    """C{/metrics}: every metric, in Prometheus' text format."""

    isLeaf = True

    def __init__(self, metrics: Metrics) -> None:
        super().__init__()
        self.metrics = metrics

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"Content-Type", CONTENT_TYPE_LATEST.encode("ascii"))
        return self.metrics.scrape()


class HealthPage(Resource):
    """C{/healthz}: 200 C{ok} while chatd serves and can commit, else 503 and why."""

    isLeaf = True

    def __init__(self, metrics: Metrics) -> None:
        super().__init__()
        self.metrics = metrics

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        request.setHeader(b"Cache-Control", b"no-store")
        problem = self.metrics.problem()
        if problem is None:
            return b"ok\n"
        request.setResponseCode(503)
        return problem.encode("utf-8") + b"\n"


class MetricsSite(Site):
    """A Site that keeps no access log: a scrape every few seconds would bury the real one."""

    noisy = False

    def log(self, request: Request) -> None:
        pass
