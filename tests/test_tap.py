"""The twistd plugin: its options, the service it makes, and its declaration."""

from __future__ import annotations

import socket
from dataclasses import fields

from twisted.application.service import IServiceMaker
from twisted.internet import reactor
from twisted.internet.error import CannotListenError
from twisted.internet.testing import MemoryReactorClock
from twisted.plugin import IPlugin, getPlugins
from twisted.python.usage import UsageError
from twisted.trial.unittest import SkipTest, SynchronousTestCase
from twisted.web.server import Site

from chatd import tap
from chatd.factory import ChatFactory
from chatd.rules import Limits


def options_for(limits: Limits) -> list[str]:
    """The command line asking for C{limits}: C{--max-name-length 8} for max_name_length, ..."""
    return [
        arg
        for field in fields(limits)
        for arg in (f"--{field.name.replace('_', '-')}", str(getattr(limits, field.name)))
    ]


def parse(*argv: str) -> tap.Options:
    config = tap.Options()
    config.parseOptions(list(argv))
    return config


class OptionsTests(SynchronousTestCase):
    def test_defaults(self) -> None:
        config = parse()
        self.assertEqual(config["ports"], ["tcp:5000", "tcp:31337"])
        self.assertEqual(config.limits(), Limits())

    def test_port_is_repeatable_and_replaces_the_defaults(self) -> None:
        config = parse("--port", "tcp:6000:interface=127.0.0.1", "-p", "unix:/run/chatd.sock")
        self.assertEqual(config["ports"], ["tcp:6000:interface=127.0.0.1", "unix:/run/chatd.sock"])

    def test_web_defaults_and_replacements(self) -> None:
        self.assertEqual(parse()["web"], ["tcp:8080"])
        self.assertEqual(parse("--web", "tcp:80", "--web", "ssl:443:privateKey=k.pem")["web"],
                         ["tcp:80", "ssl:443:privateKey=k.pem"])
        self.assertEqual(parse("--web", "none")["web"], [])
        self.assertEqual(parse("--no-web")["web"], [])
        self.assertEqual(parse("--web-origin", "https://chat.example.com")["web-origins"],
                         ["https://chat.example.com"])
        for argv in [("--web", "none", "--web", "tcp:80"), ("--no-web", "--web", "tcp:80"),
                     ("--web-origin", "chat.example.com"), ("--web-origin", "ftp://x")]:
            self.assertRaises(UsageError, parse, *argv)

    def test_each_options_object_has_its_own_ports(self) -> None:
        parse("--port", "tcp:6000")
        self.assertEqual(parse()["ports"], ["tcp:5000", "tcp:31337"])

    def test_limits(self) -> None:
        for limits in [
            Limits(max_name_length=12, max_message_length=100, max_line_length=2048,
                   line_flush=0.5, max_frame_length=4096),
            # The smallest each option takes.
            Limits(max_name_length=1, max_message_length=1, max_line_length=16,
                   line_flush=0.001, max_frame_length=8),
        ]:
            self.assertEqual(parse(*options_for(limits)).limits(), limits)

    def test_bad_values(self) -> None:
        accepted = []
        for argv in [
            ("--max-name-length", "0"),
            ("--max-message-length", "0"),
            ("--max-line-length", "15"),
            ("--max-frame-length", "7"),
            ("--line-flush", "0"),
            ("--line-flush", "-1"),
            ("--max-name-length", "eight"),
            ("--line-flush", "soon"),
            ("--no-such-option",),
        ]:
            try:
                parse(*argv)
            except UsageError:
                continue
            accepted.append(argv)
        self.assertEqual(accepted, [])


class ServiceTests(SynchronousTestCase):
    def test_listens_on_every_port_with_one_hub(self) -> None:
        memory = MemoryReactorClock()
        config = parse(
            "--port", "tcp:6000:interface=127.0.0.1",
            "--port", "unix:/tmp/chatd-test.sock",
            "--max-name-length", "5",
            "--no-web",
        )
        service = tap.makeService(config, reactor=memory)
        self.assertEqual((memory.tcpServers, memory.unixServers), ([], []))

        service.startService()
        self.addCleanup(service.stopService)
        [(port, tcpFactory, _, interface)] = memory.tcpServers
        [(path, unixFactory, *_)] = memory.unixServers
        self.assertEqual((port, interface, path), (6000, "127.0.0.1", "/tmp/chatd-test.sock"))
        self.assertIsInstance(tcpFactory, ChatFactory)
        self.assertIs(tcpFactory, unixFactory)
        self.assertEqual(tcpFactory.hub.limits, config.limits())
        self.assertIs(tcpFactory.clock, memory)

    def test_default_ports(self) -> None:
        memory = MemoryReactorClock()
        service = tap.makeService(parse(), reactor=memory)
        service.startService()
        self.addCleanup(service.stopService)
        self.assertEqual(
            [(port, interface) for port, _, _, interface in memory.tcpServers],
            [(5000, ""), (31337, ""), (8080, "")],
        )

    def test_web_serves_the_page_and_socket_on_the_same_hub(self) -> None:
        memory = MemoryReactorClock()
        config = parse("--port", "tcp:6000", "--web", "tcp:6080", "--web", "tcp:6081")
        service = tap.makeService(config, reactor=memory)
        service.startService()
        self.addCleanup(service.stopService)
        self.assertEqual([port for port, *_ in memory.tcpServers], [6000, 6080, 6081])
        [(_, chat, _, _), (_, site, _, _), (_, same, _, _)] = memory.tcpServers
        self.assertIsInstance(site, Site)
        self.assertIs(same, site)
        self.assertIs(site.resource.children[b"ws"].factory, chat)

    def test_no_web(self) -> None:
        for argv in [("--no-web",), ("--web", "none")]:
            memory = MemoryReactorClock()
            service = tap.makeService(parse(*argv), reactor=memory)
            service.startService()
            self.addCleanup(service.stopService)
            self.assertEqual([port for port, *_ in memory.tcpServers], [5000, 31337])

    def test_a_port_that_cannot_be_bound_fails_the_start(self) -> None:
        taken = socket.socket()
        self.addCleanup(taken.close)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for argv in [
            ("--port", f"tcp:{port}:interface=127.0.0.1", "--no-web"),
            ("--port", "tcp:0:interface=127.0.0.1", "--web", f"tcp:{port}:interface=127.0.0.1"),
        ]:
            service = tap.makeService(parse(*argv), reactor=reactor)
            self.assertRaises(CannotListenError, service.startService)
            service.stopService()


class PluginTests(SynchronousTestCase):
    def test_declaration(self) -> None:
        from twisted.plugins import chatd_plugin

        maker = chatd_plugin.chatd
        self.assertTrue(IServiceMaker.providedBy(maker))
        self.assertTrue(IPlugin.providedBy(maker))
        self.assertEqual((maker.tapname, maker.module), ("chatd", "chatd.tap"))
        self.assertIs(maker.options, tap.Options)
        self.assertIs(maker.makeService, tap.makeService)

    def test_found_by_twisted(self) -> None:
        names = [maker.tapname for maker in getPlugins(IServiceMaker)]
        self.assertIn("chatd", names)


class PostgresOptionTests(SynchronousTestCase):
    def test_node_lease(self) -> None:
        """--node-lease defaults to 10 s and must be between 1 and 3600."""
        self.assertEqual(parse()["node-lease"], 10.0)
        self.assertEqual(parse("--node-lease", "2.5")["node-lease"], 2.5)
        for bad in ("0", "0.5", "3601", "soon"):
            self.assertRaises(UsageError, parse, "--node-lease", bad)

    def test_unreachable_database_ends_the_start(self) -> None:
        """A PostgreSQL URI nobody answers on ends twistd with one readable
        line, without the password."""
        try:
            import psycopg  # noqa: F401
        except ImportError:
            raise SkipTest("psycopg is not installed")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        uri = f"postgresql://chatd:hunter2@127.0.0.1:{port}/chatd"
        e = self.assertRaises(
            SystemExit, tap.makeService, parse("--database", uri), MemoryReactorClock()
        )
        message = str(e)
        self.assertTrue(
            message.startswith(f"chatd: cannot use database postgresql://chatd:***@127.0.0.1:{port}/chatd: "),
            message,
        )
        self.assertNotIn("hunter2", message)
