"""Metrics and health on StringTransports and a task.Clock: each figure against what happened."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.address import IPv4Address, UNIXAddress
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import LogLevel, globalLogPublisher
from twisted.python.failure import Failure
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from chatd import __version__, binwire, tap
from chatd.database import open_database
from chatd.factory import transport_kind
from chatd.jsonlog import event_as_json
from chatd.metrics import LagProbe, Metrics
from chatd.store import SqliteStore
from tests.support import Client, InlineWorker, Server, command


class Scrape:
    """One scrape, parsed by prometheus_client's own parser."""

    def __init__(self, metrics: Metrics) -> None:
        self.families = {
            family.name: family
            for family in text_string_to_metric_families(metrics.scrape().decode("utf-8"))
        }
        self.samples = {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in self.families.values()
            for sample in family.samples
        }

    def __call__(self, name: str, **labels: str) -> float:
        return self.samples[(name, tuple(sorted(labels.items())))]

    def samples_names(self) -> list[str]:
        return [name for name, _ in self.samples]


def watched(server: Server, database: bool = False) -> Metrics:
    metrics = Metrics(server.clock, database=database)
    metrics.watch(server.factory)
    return metrics


def nick(server: Server, name: str, port: int = 2, host: str = "127.0.0.1") -> Client:
    client = server.connect(host, port)
    client.send(f"!nick {name}\n".encode())
    assert client.lines()[0].startswith("!users"), name
    return client


def register(server: Server, name: bytes, port: int = 1, host: str = "127.0.0.1") -> Client:
    client = server.connect(host, port)
    client.send(command(b"register", name))
    assert client.frames() == [b"Hello, " + name], name
    return client


class ConnectionsAndUsersTests(SynchronousTestCase):
    def test_by_protocol_and_state(self) -> None:
        server = Server()
        metrics = watched(server)
        server.connect(port=1)
        nick(server, "liz", port=2)
        bob = register(server, b"bob", port=3)
        register(server, b"carol", port=4)
        got = Scrape(metrics)
        self.assertEqual(
            [got("chatd_connections", protocol=p, transport="tcp") for p in ("none", "line", "binary")],
            [1, 1, 2],
        )
        self.assertEqual(got("chatd_connections", protocol="line", transport="tls"), 0)
        self.assertEqual(got("chatd_users", protocol="line", state="online"), 1)
        self.assertEqual(got("chatd_users", protocol="binary", state="online"), 2)
        self.assertEqual(got("chatd_users", protocol="binary", state="offline"), 0)

        bob.close()
        got = Scrape(metrics)
        self.assertEqual(got("chatd_connections", protocol="binary", transport="tcp"), 1)
        self.assertEqual(got("chatd_users", protocol="binary", state="online"), 1)
        self.assertEqual(got("chatd_users", protocol="binary", state="offline"), 1)
        self.assertEqual(got("chatd_connections_closed_total", reason="client-closed"), 1)

    def test_logged_out_is_not_a_user(self) -> None:
        server = Server()
        metrics = watched(server)
        bob = register(server, b"bob")
        bob.send(command(b"logout"))
        got = Scrape(metrics)
        self.assertEqual(got("chatd_users", protocol="binary", state="online"), 0)
        self.assertEqual(got("chatd_users", protocol="binary", state="offline"), 0)
        self.assertEqual(got("chatd_connections", protocol="binary", transport="tcp"), 1)

    def test_build_info(self) -> None:
        got = Scrape(watched(Server()))
        self.assertEqual(got("chatd_build_info", version=__version__), 1)
        self.assertIn("process_cpu_seconds_total", got.families["process_cpu_seconds"].samples[0].name)


class CommandTests(SynchronousTestCase):
    def test_ok_and_error_by_protocol_and_command(self) -> None:
        server = Server()
        metrics = watched(server)
        liz = nick(server, "liz")
        liz.send(b"!users\n!sendto nobody hi\n!bogus\n!sendmsg hi\n!sendmsg \n")
        bob = register(server, b"bob")
        bob.send(command(b"send", b"liz", b"hi") + command(b"send", b"nobody", b"hi"))
        bob.send(command(b"users") + command(b"receive"))
        got = Scrape(metrics)

        def count(protocol: str, name: str, result: str) -> float:
            return got("chatd_commands_total", protocol=protocol, command=name, result=result)

        self.assertEqual(
            [count("line", "nick", "ok"), count("line", "users", "ok"),
             count("line", "sendto", "error"), count("line", "unknown", "error"),
             count("line", "sendmsg", "ok"), count("line", "sendmsg", "error")],
            [1, 1, 1, 1, 1, 1],
        )
        self.assertEqual(
            [count("binary", "register", "ok"), count("binary", "send", "ok"),
             count("binary", "send", "error"), count("binary", "users", "ok"),
             count("binary", "receive", "ok")],
            [1, 1, 1, 1, 1],
        )
        self.assertEqual(count("binary", "sendall", "ok"), 0)
        self.assertEqual(count("line", "poke", "error"), 0)

    def test_refused_commands_are_errors(self) -> None:
        server = Server()
        metrics = watched(server)
        server.connect(port=1).send(b"!users\n")
        server.connect(port=2).send(command(b"send", b"x", b"y"))
        server.connect(port=3).send(command(b"GET / HTTP/1.1"))
        got = Scrape(metrics)
        self.assertEqual(got("chatd_commands_total", protocol="line", command="users", result="error"), 1)
        self.assertEqual(got("chatd_commands_total", protocol="binary", command="send", result="error"), 1)
        # Never the client's own word as a label.
        self.assertEqual(got("chatd_commands_total", protocol="binary", command="unknown", result="error"), 1)
        commands = {s.labels["command"] for s in got.families["chatd_commands"].samples}
        self.assertNotIn("GET / HTTP/1.1", commands)


class DeliveryTests(SynchronousTestCase):
    def test_push_mailbox_and_full(self) -> None:
        server = Server(mailbox_size=2)
        metrics = watched(server)
        liz, ann = nick(server, "liz", port=1), nick(server, "ann", port=2)
        bob, carol = register(server, b"bob", port=3), register(server, b"carol", port=4)

        def figures() -> list[float]:
            got = Scrape(metrics)
            return [got("chatd_deliveries_total", route="push"),
                    got("chatd_deliveries_total", route="mailbox"),
                    got("chatd_mailbox_messages"),
                    got("chatd_mailbox_full_total")]

        self.assertEqual(figures(), [0, 0, 0, 0])
        liz.send(b"!sendmsg hi all\n")  # ann pushed; bob and carol mailed
        self.assertEqual(figures(), [1, 2, 2, 0])
        bob.send(command(b"send", b"carol", b"x"))  # carol's mailbox is now full
        self.assertEqual(figures(), [1, 3, 3, 0])
        liz.send(b"!sendto carol y\n!sendto ann z\n")
        self.assertEqual(figures(), [2, 3, 3, 1])
        bob.send(command(b"sendall", b"to all"))  # liz and ann pushed, carol full
        self.assertEqual(figures(), [4, 3, 3, 2])
        self.assertEqual(bob.frames()[-1], binwire.mailboxes_full(["carol"]).encode())
        carol.send(command(b"receive"))  # mail taken
        self.assertEqual(figures(), [4, 3, 1, 2])
        ann.send(b"!poke bob\n")  # shown to both line users, mailed to bob
        self.assertEqual(figures(), [6, 4, 2, 2])


class ClosedTests(SynchronousTestCase):
    """One way to end a connection for each reason, each counted once under it."""

    def closed(self, server: Server, metrics: Metrics, client: Client, reason: str) -> None:
        self.assertTrue(client.closed, reason)
        client.close()
        got = Scrape(metrics)
        counted = {
            s.labels["reason"]: s.value
            for s in got.families["chatd_connections_closed"].samples
            if s.value
        }
        self.assertEqual(counted, {reason: 1}, reason)

    def check(self, reason: str, **limits: Any) -> tuple[Server, Metrics]:
        server = Server(**limits)
        return server, watched(server)

    def test_client_closed_and_error(self) -> None:
        server, metrics = self.check("client-closed")
        nick(server, "liz").close()
        self.assertEqual(Scrape(metrics)("chatd_connections_closed_total", reason="client-closed"), 1)
        bob = register(server, b"bob")
        bob.protocol.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(Scrape(metrics)("chatd_connections_closed_total", reason="error"), 1)

    def test_quit(self) -> None:
        server, metrics = self.check("quit")
        liz = nick(server, "liz")
        liz.send(b"!quit\n")
        self.closed(server, metrics, liz, "quit")

    def test_handshake_timeout(self) -> None:
        server, metrics = self.check("handshake-timeout", handshake_timeout=5.0)
        silent = server.connect()
        server.clock.advance(5.0)
        self.closed(server, metrics, silent, "handshake-timeout")

    def test_idle_timeout(self) -> None:
        server, metrics = self.check("idle-timeout", idle_timeout=5.0)
        bob = register(server, b"bob")
        server.clock.advance(5.0)
        self.closed(server, metrics, bob, "idle-timeout")

    def test_flood(self) -> None:
        server, metrics = self.check("flood", command_rate=1.0, command_burst=1, max_input_backlog=4096)
        bob = register(server, b"bob")
        bob.send(command(b"users") * 1000)
        self.closed(server, metrics, bob, "flood")

    def test_slow_reader(self) -> None:
        server, metrics = self.check("slow-reader", max_output_backlog=1000, command_burst=100)
        slow, talker = nick(server, "slow", port=1), nick(server, "talk", port=2)
        slow.transport.producer.pauseProducing()
        for _ in range(20):
            talker.send(b"!sendmsg " + b"x" * 50 + b"\n")
        self.closed(server, metrics, slow, "slow-reader")

    def test_line_too_long(self) -> None:
        server, metrics = self.check("line-too-long", max_line_length=16)
        liz = nick(server, "liz")
        liz.send(b"!sendmsg " + b"x" * 20 + b"\n")
        self.closed(server, metrics, liz, "line-too-long")

    def test_frame_too_long(self) -> None:
        server, metrics = self.check("frame-too-long", max_frame_length=16)
        bob = register(server, b"bob")
        bob.send(command(b"sendall", b"x" * 17))
        self.closed(server, metrics, bob, "frame-too-long")

    def test_nick_required(self) -> None:
        server, metrics = self.check("nick-required")
        client = server.connect()
        client.send(b"!sendmsg hi\n")
        self.closed(server, metrics, client, "nick-required")

    def test_unknown_command(self) -> None:
        server, metrics = self.check("unknown-command")
        client = server.connect()
        client.send(command(b"hello"))
        self.closed(server, metrics, client, "unknown-command")

    def test_refused(self) -> None:
        server, metrics = self.check("refused")
        client = server.connect()
        client.send(command(b"receive"))
        self.closed(server, metrics, client, "refused")

    def test_server_full(self) -> None:
        server, metrics = self.check("server-full", max_connections=1)
        nick(server, "liz", port=1)
        late = server.connect(port=2)
        late.send(b"!nick ann\n")
        self.closed(server, metrics, late, "server-full")

    def test_host_full(self) -> None:
        server, metrics = self.check("host-full", max_connections_per_host=1)
        nick(server, "liz", port=1)
        nick(server, "ann", port=1, host="10.0.0.2")
        late = server.connect(port=2)
        late.send(command(b"register", b"bob"))
        self.assertEqual(late.frames(), [b"Server is full!"])
        self.closed(server, metrics, late, "host-full")

    def test_shutdown(self) -> None:
        server, metrics = self.check("shutdown")
        liz = nick(server, "liz")
        server.factory.shutdown()
        self.closed(server, metrics, liz, "shutdown")

    def test_store_failed_is_no_ending(self) -> None:
        worker = InlineWorker()
        clock = Clock()
        store = SqliteStore(open_database(":memory:"), clock, worker)
        server = Server(store=store, clock=clock)
        metrics = watched(server)
        bob = register_stored(server, b"bob")
        worker.failures = 1
        bob.send(command(b"send", b"bob", b"hi"))
        clock.advance(0)
        self.assertEqual(bob.frames(), [binwire.STORE_FAILED.encode()])
        # Not an ending: the connection stays, and the failure is counted
        # where it happened, in the store.
        self.assertFalse(bob.closed)
        got = Scrape(metrics)
        self.assertEqual(
            [s.value for s in got.families["chatd_connections_closed"].samples if s.value], []
        )
        bob.send(command(b"send", b"bob", b"again"))
        clock.advance(SqliteStore.retry)
        self.assertEqual(bob.frames(), [binwire.ADDED.encode()])

    def test_first_reason_is_logged_once_with_its_limit(self) -> None:
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        server = Server(command_rate=1.0, command_burst=1, max_input_backlog=4096)
        liz = nick(server, "liz")
        liz.send(b"!users\n" * 1000)
        liz.send(b"!users\n" * 1000)
        server.factory.shutdown()
        liz.close()
        endings = [e for e in events if "reason" in e]
        self.assertEqual(len(endings), 1)
        (ending,) = endings
        self.assertEqual(
            (ending["reason"], ending["option"], ending["limit"], ending["log_level"]),
            ("flood", "max-input-backlog", 4096, LogLevel.warn),
        )
        self.assertEqual(ending["peer"], IPv4Address("TCP", "127.0.0.1", 2))


def register_stored(server: Server, name: bytes) -> Client:
    client = server.connect()
    client.send(command(b"register", name))
    server.clock.advance(0)
    assert client.frames() == [b"Hello, " + name]
    return client


class StoreHealthTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.worker = InlineWorker()
        self.clock = Clock()
        self.server = Server(clock=self.clock)
        self.metrics = Metrics(self.clock, database=True)
        store = SqliteStore(
            open_database(":memory:"), self.clock, self.worker, self.metrics.store_report
        )
        self.server = Server(store=store, clock=self.clock)
        self.metrics.watch(self.server.factory)

    def test_failure_unhealthy_until_a_commit_succeeds(self) -> None:
        self.assertIsNone(self.metrics.problem())
        bob = register_stored(self.server, b"bob")
        got = Scrape(self.metrics)
        self.assertEqual(got("chatd_store_commit_seconds_count"), 1)
        self.assertEqual(got("chatd_store_failures_total"), 0)

        self.worker.failures = 2
        bob.send(command(b"send", b"bob", b"hi"))
        self.clock.advance(0)
        self.assertEqual(self.metrics.problem(), "store cannot commit: database or disk is full")
        self.clock.advance(SqliteStore.retry)  # tried again: fails again
        self.assertEqual(Scrape(self.metrics)("chatd_store_failures_total"), 2)
        self.assertIsNotNone(self.metrics.problem())
        self.clock.advance(SqliteStore.retry)
        self.assertIsNone(self.metrics.problem())
        got = Scrape(self.metrics)
        self.assertEqual(got("chatd_store_commit_seconds_count"), 2)
        self.assertEqual(got("chatd_store_failures_total"), 2)

    def test_shutting_down(self) -> None:
        self.server.factory.shutdown()
        self.assertEqual(self.metrics.problem(), "shutting down")

    def test_without_database_no_store_metrics(self) -> None:
        got = Scrape(watched(Server()))
        self.assertNotIn("chatd_store_commit_seconds", got.families)
        self.assertNotIn("chatd_store_failures", got.families)


class LagTests(SynchronousTestCase):
    def test_how_late_the_timer_runs(self) -> None:
        clock = Clock()
        lags: list[float] = []
        probe = LagProbe(clock, lags.append, interval=1.0)
        probe.startService()
        clock.advance(1.0)
        # The reactor was busy for 2.5 s: the next call runs that late.
        clock.advance(3.5)
        clock.advance(1.0)
        self.assertEqual(lags, [0.0, 2.5, 0.0])
        probe.stopService()
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_histogram(self) -> None:
        server = Server()
        metrics = watched(server)
        probe = LagProbe(server.clock, metrics.lag.observe)
        probe.startService()
        self.addCleanup(probe.stopService)
        server.clock.advance(1.0)
        server.clock.advance(1.2)
        got = Scrape(metrics)
        self.assertEqual(got("chatd_reactor_lag_seconds_count"), 2)
        self.assertAlmostEqual(got("chatd_reactor_lag_seconds_sum"), 0.2)
        self.assertEqual(got("chatd_reactor_lag_seconds_bucket", le="0.1"), 1)
        self.assertEqual(got("chatd_reactor_lag_seconds_bucket", le="0.25"), 2)


class TransportKindTests(SynchronousTestCase):
    def test_kinds(self) -> None:
        tcp = StringTransport(hostAddress=IPv4Address("TCP", "127.0.0.1", 5000))
        unix = StringTransport(hostAddress=UNIXAddress("/run/chatd.sock"))
        web = StringTransport()
        web.chatd_transport_kind = "websocket"  # type: ignore[attr-defined]
        self.assertEqual(
            [transport_kind(t) for t in (tcp, unix, web)], ["tcp", "unix", "websocket"]
        )

    def test_counted_by_kind(self) -> None:
        server = Server()
        metrics = watched(server)
        protocol = server.factory.buildProtocol(UNIXAddress(None))
        protocol.makeConnection(StringTransport(hostAddress=UNIXAddress("/run/chatd.sock")))
        protocol.dataReceived(b"!nick liz\n")
        got = Scrape(metrics)
        self.assertEqual(got("chatd_connections", protocol="line", transport="unix"), 1)
        self.assertEqual(got("chatd_connections", protocol="line", transport="tcp"), 0)


class JsonEventTests(SynchronousTestCase):
    def test_fields_message_and_repr(self) -> None:
        peer = IPv4Address("TCP", "10.0.0.1", 4000)
        event = {
            "log_format": "ending {peer}: {reason}",
            "log_level": LogLevel.warn,
            "log_namespace": "chatd.bounded.BoundedTransport",
            "log_time": 1796645337.5,
            "log_source": object(),
            "peer": peer,
            "reason": "flood",
            "limit": 4096,
            "ratio": float("nan"),
        }
        record = json.loads(event_as_json(event))
        self.assertEqual(
            record,
            {
                "time": "2026-12-07T12:08:57.500+00:00",
                "level": "warn",
                "namespace": "chatd.bounded.BoundedTransport",
                "message": f"ending {peer}: flood",
                "system": None,
                "format": "ending {peer}: {reason}",
                "peer": repr(peer),
                "reason": "flood",
                "limit": 4096,
                "ratio": "nan",
            },
        )

    def test_failure_has_its_traceback(self) -> None:
        try:
            1 / 0
        except ZeroDivisionError:
            failure = Failure()
        event = {"log_format": "oops", "log_level": LogLevel.critical, "log_failure": failure,
                 "log_time": 0.0, "log_namespace": "x"}
        record = json.loads(event_as_json(event))
        self.assertIn("ZeroDivisionError", record["traceback"])
        self.assertEqual(record["message"], "oops")
        self.assertNotIn("\n", event_as_json(event))



class ServiceTests(SynchronousTestCase):
    """makeService with --metrics: /healthz says so while the server drains."""

    def test_unhealthy_while_draining_then_listener_stops(self) -> None:
        reactor = MemoryReactorClock()
        config = tap.Options()
        config.parseOptions(["--no-web", "--port", "tcp:0", "--metrics", "tcp:0:interface=127.0.0.1"])
        top = tap.makeService(config, reactor=reactor)
        top.startService()
        (draining,) = [s for s in top if isinstance(s, tap.Draining)]
        (listener,) = list(draining)
        site = [port[1] for port in reactor.tcpServers if port[3] == "127.0.0.1"][0]
        factory = [port[1] for port in reactor.tcpServers if port[3] != "127.0.0.1"][0]

        def health() -> tuple[int, bytes]:
            request = DummyRequest([b"healthz"])
            body = site.resource.getChildWithDefault(b"healthz", request).render(request)
            return request.responseCode or 200, body

        self.assertEqual(health(), (200, b"ok\n"))
        client = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        client.makeConnection(StringTransport())
        stopped = top.stopService()
        self.assertNoResult(stopped)
        self.assertEqual(health(), (503, b"shutting down\n"))
        self.assertTrue(listener.running)
        client.connectionLost(Failure(ConnectionDone()))
        self.successResultOf(stopped)
        self.assertFalse(listener.running)


class ContribTests(SynchronousTestCase):
    """contrib/: the Grafana dashboard charts every metric, by names chatd serves."""

    def test_dashboard(self) -> None:
        path = Path(__file__).resolve().parent.parent / "contrib" / "grafana-dashboard.json"
        dashboard = json.loads(path.read_text("utf-8"))
        exprs = " ".join(
            target["expr"] for panel in dashboard["panels"] for target in panel["targets"]
        )
        used = set(re.findall(r"\b(chatd_\w+|process_\w+)", exprs))
        server = Server()
        metrics = Metrics(server.clock, database=True)
        metrics.watch(server.factory)
        served = set(Scrape(metrics).samples_names())
        self.assertEqual(used - served, set())
        families = {
            "chatd_connections", "chatd_users", "chatd_connections_closed_total",
            "chatd_commands_total", "chatd_deliveries_total", "chatd_mailbox_messages",
            "chatd_mailbox_full_total", "chatd_store_commit_seconds_bucket",
            "chatd_store_failures_total", "chatd_reactor_lag_seconds_bucket", "chatd_build_info",
        }
        self.assertEqual(families - used, set())
        ids = [panel["id"] for panel in dashboard["panels"]]
        self.assertEqual(len(ids), len(set(ids)))


class OptionsTests(SynchronousTestCase):
    def test_defaults_and_bad_values(self) -> None:
        config = tap.Options()
        config.parseOptions([])
        self.assertEqual((config["metrics"], config["log-format"]), (None, "text"))
        for argv in (["--metrics", ""], ["--log-format", "xml"]):
            self.assertRaises(UsageError, tap.Options().parseOptions, argv)
