"""Several nodes when something fails: a node killed, PostgreSQL restarted or gone."""

from __future__ import annotations

import re
import time
import urllib.error
import urllib.request

from tests import pgserver
from tests.nodes import (
    PATIENCE,
    Cluster,
    LineClient,
    NodeClientsTestCase,
    eventually,
    require_postgres,
)

LEASE = 2.0


class KilledNodeTests(NodeClientsTestCase):
    def test_sigkill(self) -> None:
        """A node killed with SIGKILL: within its lease its line users are
        gone everywhere and their names free; its binary users keep their
        names and every acknowledged message."""
        require_postgres()
        cluster = Cluster(
            self, pgserver.fresh_database(), "--node-lease", str(LEASE), "--mailbox-share", "100"
        )
        a, b = cluster.start(2)
        watcher = self.line(b, "watcher")
        self.line(a, "doomed")
        mailer = self.binary(a, "mailer")
        acked = [
            f"m{i}" for i in range(20)
            if mailer.ask(b"send", b"mailer", f"m{i}".encode()) == "Message added to storage!"
        ]
        self.assertEqual(len(acked), 20)
        killed = time.monotonic()
        cluster.nodes[0].kill()
        watcher.expect(lambda l: l == "!left doomed", timeout=LEASE * 3)
        # Within the lease (and a little, for a machine under load).
        self.assertLess(time.monotonic() - killed, LEASE + 0.5)
        watcher.say("!users")
        self.assertEqual(watcher.expect(lambda l: l.startswith("!users")), "!users 2 watcher mailer")
        self.line(b, "doomed")
        back = self.binary(b)
        self.assertEqual(back.ask(b"register", b"mailer"), "Nice to see you, mailer")
        self.assertEqual(back.receive(), [("mailer", text) for text in acked])


class StoppedNodeTests(NodeClientsTestCase):
    def test_sigterm(self) -> None:
        """A node stopped as Docker stops it: its line users are told, and the
        others see them leave at once, not a lease later."""
        require_postgres()
        cluster = Cluster(self, pgserver.fresh_database(), "--node-lease", "60")
        a, b = cluster.start(2)
        watcher = self.line(b, "watcher")
        leaving = self.line(a, "leaving")
        stopped = time.monotonic()
        log = cluster.nodes[0].stop()
        self.assertEqual(
            leaving.expect(lambda l: l.startswith("!error")),
            "!error server-shutdown the server is shutting down",
        )
        watcher.expect(lambda l: l == "!left leaving")
        self.assertLess(time.monotonic() - stopped, 10, log)
        self.line(b, "leaving")


class DatabaseFailureTests(NodeClientsTestCase):
    def setUp(self) -> None:
        require_postgres()
        self.pg = pgserver.PostgresServer()
        self.addCleanup(self.pg.destroy)
        self.pg.start()
        self.uri = self.pg.new_database()

    def test_restart_in_traffic(self) -> None:
        """PostgreSQL restarted while clients send: no node crashes, what could
        not be stored is refused, never acknowledged and lost, and service
        resumes on its own within 10 s."""
        cluster = Cluster(self, self.uri, "--node-lease", "15", "--mailbox-share", "100")
        a, b = cluster.start(2)
        alice = self.line(a, "alice")
        bob = self.line(b, "bob")
        self.binary(b, "rcpt").close()
        sender = self.binary(a, "sender")
        acked: list[str] = []
        refused = 0

        def send(i: int) -> None:
            nonlocal refused
            reply = sender.ask(b"send", b"rcpt", f"t{i}".encode())
            if reply == "Message added to storage!":
                acked.append(f"t{i}")
                return
            # Refused, on the same connection, which stays open.
            self.assertEqual(reply, "Storage failed! Try again later.")
            refused += 1

        for i in range(20):
            send(i)
        self.pg.stop()
        for i in range(20, 30):
            send(i)
        alice.say("!sendmsg while down")
        self.assertEqual(
            alice.expect(lambda l: l.startswith("!error")),
            "!error storage-failed the chat's database is unreachable; try again later",
        )
        self.pg.start()
        restarted = time.monotonic()

        def works() -> bool:
            alice.say(f"!sendto bob ping{time.monotonic()}")
            return bool(bob.line(0.5))

        eventually(works, "cross-node chat after the restart")
        self.assertLess(time.monotonic() - restarted, 10)
        for i in range(30, 50):
            send(i)
        self.assertGreaterEqual(refused, 10)
        self.assertIn("t49", acked)
        self.assertEqual([n.process.poll() for n in cluster.nodes], [None, None])
        rcpt = self.binary(b)
        self.assertEqual(rcpt.ask(b"register", b"rcpt"), "Nice to see you, rcpt")
        got = [text for _, text in rcpt.receive()]
        # Every acknowledged message, once, in order; a refused one may have
        # been stored if the database went away just after its commit.
        self.assertEqual([t for t in got if t in acked], acked)
        self.assertEqual(len(got), len(set(got)))

    def test_cut_off_longer_than_lease(self) -> None:
        """A node cut off from the database for longer than its lease drops
        its line users, so no name is held twice once it is back."""
        cluster = Cluster(self, self.uri, "--node-lease", str(LEASE))
        a, b = cluster.start(2)
        alice = self.line(a, "alice")
        bob = self.line(b, "bob")
        self.binary(a, "carol").close()
        self.pg.stop()
        for client in (alice, bob):
            self.assertEqual(
                client.expect(lambda l: l.startswith("!error"), timeout=LEASE * 3),
                "!error node-lost this node lost contact with the chat's database; connect again",
            )
            self.assertEqual(client.line(PATIENCE), "")
        self.pg.start()

        def claimed(port: int, name: str) -> LineClient | None:
            try:
                client = LineClient(port, name)
            except AssertionError:
                return None
            self.addCleanup(client.close)
            return client

        eventually(lambda: claimed(b, "alice"), "alice's name to be free again")
        dave = eventually(lambda: claimed(a, "dave"), "the cut-off node to serve again")
        assert isinstance(dave, LineClient)
        dave.say("!users")
        self.assertEqual(dave.expect(lambda l: l.startswith("!users")), "!users 3 carol alice dave")

    def test_health_follows_the_database(self) -> None:
        """A node's /healthz says 503 and why while PostgreSQL is gone, and
        200 again once it is back; its commits are measured."""
        port = pgserver.free_port()
        cluster = Cluster(
            self, self.uri, "--node-lease", str(LEASE),
            "--metrics", f"tcp:{port}:interface=127.0.0.1",
        )
        cluster.start(1)

        def health() -> tuple[int, str]:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
                    return r.status, r.read().decode("utf-8")
            except urllib.error.HTTPError as e:
                return e.code, e.read().decode("utf-8")

        self.assertEqual(eventually(health, "health", PATIENCE), (200, "ok\n"))

        def committed() -> bool:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                metrics = r.read().decode("utf-8")
            return re.search(r"^chatd_store_commit_seconds_count [1-9]", metrics, re.M) is not None

        # The lease's renewals are commits too, so some are measured soon.
        eventually(committed, "a commit to be measured", LEASE * 3)
        self.pg.stop()
        status, body = eventually(
            lambda: (lambda got: got if got[0] != 200 else None)(health()),
            "health to fail while the database is down", LEASE * 3,
        )
        self.assertEqual(status, 503)
        self.assertTrue(body.startswith("store cannot commit: "), body)
        self.pg.start()
        eventually(lambda: health() == (200, "ok\n"), "health once the database is back", 10)


class ListenerDropTests(NodeClientsTestCase):
    def test_nothing_missed_while_listening_again(self) -> None:
        """A node whose LISTEN connection drops catches up on what was
        committed meanwhile: its line users get every message, once, in order."""
        require_postgres()
        import psycopg

        uri = pgserver.fresh_database()
        cluster = Cluster(self, uri, "--node-lease", "15")
        a, b = cluster.start(2)
        alice = self.line(a, "alice")
        bob = self.line(b, "bob")
        alice.expect(lambda l: l == "!joined bob")
        with psycopg.connect(uri, autocommit=True) as db:
            (dropped,) = db.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE application_name = %s",
                (f"chatd-listen-{cluster.nodes[1].process.pid}",),
            ).fetchone()
        self.assertEqual(dropped, 1)
        sent = [f"m{i}" for i in range(30)]
        for text in sent:
            alice.say(f"!sendmsg {text}")
        got = [bob.expect(lambda l: l.startswith("!msg alice ")) for _ in sent]
        self.assertEqual(got, [f"!msg alice {text}" for text in sent])
        # And nothing twice.
        self.assertIsNone(bob.line(1.0))
