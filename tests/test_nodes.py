"""Several nodes, one server: real C{twistd chatd} processes on a real PostgreSQL.

PROTOCOL.md section 7: a name is unique across nodes, the user list is one,
every delivery crosses nodes once and in order, a mailbox is one whichever
node polls it.
"""

from __future__ import annotations

import threading

from twisted.trial.unittest import SynchronousTestCase

from tests import pgserver
from tests.nodes import (
    BinaryClient,
    Cluster,
    LineClient,
    NodeClientsTestCase,
    eventually,
    require_postgres,
)


class NodesTestCase(NodeClientsTestCase):
    def setUp(self) -> None:
        require_postgres()
        # Broadcasts unthrottled: these tests send bursts from one host.
        self.cluster = Cluster(
            self, pgserver.fresh_database(), "--broadcast-rate", "1000", "--broadcast-burst", "1000"
        )
        self.a, self.b = self.cluster.start(2)


class NamespaceTests(NodesTestCase):
    def test_one_user_list(self) -> None:
        """Every node lists every user of every node, in order of arrival."""
        alice = self.line(self.a, "alice")
        self.binary(self.b, "bob")
        carol = self.line(self.b, "carol")
        dave = self.binary(self.a, "dave")
        expected = ["alice", "bob", "carol", "dave"]
        self.assertEqual(dave.users(), expected)
        alice.say("!users")
        self.assertEqual(alice.expect(lambda l: l.startswith("!users")), "!users 4 alice bob carol dave")
        carol.say("!users")
        self.assertEqual(carol.expect(lambda l: l.startswith("!users")), "!users 4 alice bob carol dave")
        self.assertEqual(self.binary(self.b).users(), expected)

    def test_name_held_elsewhere_refused(self) -> None:
        """A name held on one node, in either protocol and any case, is refused on the other."""
        self.line(self.a, "alice")
        self.binary(self.a, "bob")
        other = self.line(self.b)
        other.say("!nick ALICE")
        self.assertEqual(other.expect(lambda l: l.startswith("!")), "!error name-taken alice is taken")
        other.say("!nick Bob")
        self.assertEqual(other.expect(lambda l: l.startswith("!")), "!error name-taken bob is taken")
        self.assertEqual(self.binary(self.b).ask(b"register", b"Alice"), "'Alice' already exists!")
        # Still open for another try, as on one node.
        other.say("!nick carol")
        self.assertTrue(other.expect(lambda l: l.startswith("!")).startswith("!users 3 "))

    def test_claim_race(self) -> None:
        """Two nodes claiming one name at the same moment: exactly one wins, every time."""
        for round in range(25):
            name = f"race{round}"
            clients = [self.line(self.a), self.line(self.b)]
            start = threading.Barrier(2)

            def claim(client: LineClient) -> None:
                start.wait()
                client.say(f"!nick {name}")

            threads = [threading.Thread(target=claim, args=(c,)) for c in clients]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            replies = sorted(c.expect(lambda l: l.startswith(("!users", "!error"))).split()[0] for c in clients)
            self.assertEqual(replies, ["!error", "!users"], f"round {round}")
            for c in clients:
                c.close()

    def test_claim_race_across_protocols(self) -> None:
        """A line !nick and a binary register of one name on two nodes: one wins."""
        for round in range(10):
            name = f"mix{round}"
            line, binary = self.line(self.a), self.binary(self.b)
            start = threading.Barrier(2)
            answers: dict[str, str] = {}

            def by_line() -> None:
                start.wait()
                line.say(f"!nick {name}")
                answers["line"] = line.expect(lambda l: l.startswith(("!users", "!error")))

            def by_binary() -> None:
                start.wait()
                answers["binary"] = binary.ask(b"register", name.encode())

            threads = [threading.Thread(target=by_line), threading.Thread(target=by_binary)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            won = [answers["line"].startswith("!users"), answers["binary"].startswith("Hello")]
            self.assertEqual(sorted(won), [False, True], f"round {round}: {answers}")


    def test_name_freed_elsewhere_at_once(self) -> None:
        """A name given up on one node may be taken on another at once."""
        for round in range(10):
            name = f"free{round}"
            holder = self.line(self.a, name)
            holder.say("!quit")
            self.assertEqual(holder.line(), "")
            self.line(self.b, name).close()
            binary = self.binary(self.b, name + "b")
            self.assertEqual(binary.ask(b"logout"), "U've been successfully logouted")
            self.line(self.a, name + "b").close()

class DeliveryTests(NodesTestCase):
    def test_announcements_cross(self) -> None:
        """!joined, !changenickname and !left reach line users on the other node once."""
        watcher = self.line(self.b, "watcher")
        alice = self.line(self.a, "alice")
        alice.say("!changenickname alicia")
        self.binary(self.a, "bob")
        logout = self.binary(self.a, "carol")
        self.assertEqual(logout.ask(b"logout"), "U've been successfully logouted")
        alice.close()
        watcher.expect(lambda l: l == "!left alicia")
        self.assertEqual(
            watcher.seen[1:],
            ["!joined alice", "!changenickname alice alicia", "!joined bob",
             "!joined carol", "!left carol", "!left alicia"],
        )
        self.assertEqual(watcher.quiet(0.3), [])

    def test_messages_cross_in_order(self) -> None:
        """Each sender's messages reach every user on the other node once, in order."""
        alice = self.line(self.a, "alice")
        bob = self.line(self.b, "bob")
        carol = self.binary(self.b, "carol")
        dave = self.binary(self.a, "dave")
        bob.quiet(0.2)
        for i in range(60):
            alice.say(f"!sendmsg m{i}")
        lines = [bob.expect(lambda l: l.startswith("!msg")) for _ in range(60)]
        self.assertEqual(lines, [f"!msg alice m{i}" for i in range(60)])
        self.assertEqual(bob.quiet(0.3), [])
        # Fair mail holds across nodes: one sender gets its share of a mailbox.
        self.assertEqual(carol.receive(), [("alice", f"m{i}") for i in range(10)])
        self.assertEqual(dave.receive(), [("alice", f"m{i}") for i in range(10)])
        # The sender does not get its own message back.
        self.assertEqual([l for l in alice.quiet(0.3) if l.startswith("!msg")], [])

    def test_private_and_pokes_cross(self) -> None:
        """!sendto, !poke, send and sendall cross nodes, in both protocols."""
        alice = self.line(self.a, "alice")
        bob = self.line(self.b, "bob")
        carol = self.binary(self.b, "carol")
        alice.say("!sendto bob psst")
        self.assertEqual(bob.expect(lambda l: l.startswith("!privmsg")), "!privmsg alice psst")
        alice.say("!poke bob")
        self.assertEqual(bob.expect(lambda l: l.startswith("!poke")), "!poke alice bob")
        self.assertEqual(alice.expect(lambda l: l.startswith("!poke")), "!poke alice bob")
        alice.say("!poke carol")
        self.assertEqual(bob.expect(lambda l: l.startswith("!poke")), "!poke alice carol")
        alice.say("!sendto carol hi carol")
        alice.say("!sendto nobody hi")
        self.assertEqual(alice.expect(lambda l: l.startswith("!error")), "!error no-such-user nobody is called nobody")
        self.assertEqual(carol.ask(b"send", b"alice", b"from carol"), "Message added to storage!")
        self.assertEqual(alice.expect(lambda l: l.startswith("!privmsg")), "!privmsg carol from carol")
        self.assertEqual(carol.ask(b"send", b"nobody", b"x"), "User 'nobody' doesn't exist!")
        self.assertEqual(carol.ask(b"sendall", b"to all"), "Message added to storage!")
        self.assertEqual(alice.expect(lambda l: l.startswith("!msg")), "!msg carol to all")
        self.assertEqual(bob.expect(lambda l: l.startswith("!msg")), "!msg carol to all")
        self.assertEqual(carol.receive(), [("alice", "!poke alice carol"), ("alice", "hi carol")])

    def test_one_mailbox(self) -> None:
        """A binary user's mailbox is one, whichever node it polls from."""
        sender = self.binary(self.a, "sender")
        self.binary(self.a, "rcpt").close()
        for i in range(5):
            self.assertEqual(sender.ask(b"send", b"rcpt", f"t{i}".encode()), "Message added to storage!")
        back = self.binary(self.b)
        self.assertEqual(back.ask(b"register", b"rcpt"), "Nice to see you, rcpt")
        self.assertEqual(back.receive(), [("sender", f"t{i}") for i in range(5)])
        self.assertEqual(back.receive(), [])

    def test_receive_on_two_nodes_at_once(self) -> None:
        """receive on two nodes at once never returns a message twice."""
        sender = self.binary(self.a, "sender")
        here, there = self.binary(self.a, "rcpt"), self.binary(self.b, "rcpt")
        got: list[tuple[str, str]] = []
        sent = 0
        for round in range(15):
            for _ in range(6):
                self.assertEqual(sender.ask(b"send", b"rcpt", f"t{sent}".encode()), "Message added to storage!")
                sent += 1
            start = threading.Barrier(2)
            results: list[list[tuple[str, str]]] = [[], []]

            def take(i: int, client: BinaryClient) -> None:
                start.wait()
                results[i] = client.receive()

            threads = [threading.Thread(target=take, args=(i, c)) for i, c in enumerate([here, there])]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            got.extend(results[0] + results[1])
        self.assertEqual(sorted(text for _, text in got), sorted(f"t{i}" for i in range(sent)))

    def test_mailbox_share_across_nodes(self) -> None:
        """A sender's share of a mailbox holds when its sends arrive together
        on one node and the mailbox's owner polls from another."""
        from tests.support import command

        sender = self.binary(self.a, "sender")
        self.binary(self.b, "rcpt")
        sender.sock.sendall(b"".join(command(b"send", b"rcpt", f"t{i}".encode()) for i in range(12)))
        replies = [sender.frame() for _ in range(12)]
        self.assertEqual(replies, ["Message added to storage!"] * 10 + ["Mailbox of 'rcpt' is full!"] * 2)
        other = self.binary(self.a, "other")
        self.assertEqual(other.ask(b"send", b"rcpt", b"fits"), "Message added to storage!")
        poller = self.binary(self.b)
        self.assertEqual(poller.ask(b"register", b"rcpt"), "Nice to see you, rcpt")
        self.assertEqual(
            poller.receive(), [("sender", f"t{i}") for i in range(10)] + [("other", "fits")]
        )


    def test_host_share_across_nodes(self) -> None:
        """One peer host's share of a mailbox (--mailbox-host-share, 50)
        holds across nodes, whatever names and nodes its mail comes from."""
        self.binary(self.b, "rcpt").close()
        for i in range(5):
            sender = self.binary(self.a if i % 2 else self.b, f"s{i}")
            for j in range(10):
                self.assertEqual(
                    sender.ask(b"send", b"rcpt", f"{i}.{j}".encode()), "Message added to storage!"
                )
        late = self.binary(self.a, "late")
        self.assertEqual(late.ask(b"send", b"rcpt", b"no room"), "Mailbox of 'rcpt' is full!")
        line = self.line(self.b, "liner")
        line.say("!sendto rcpt nor here")
        self.assertTrue(line.expect(lambda l: l.startswith("!error")).startswith("!error mailbox-full"))
        poller = self.binary(self.a)
        self.assertEqual(poller.ask(b"register", b"rcpt"), "Nice to see you, rcpt")
        self.assertEqual(len(poller.receive()), 50)
        # Taken: room again.
        self.assertEqual(late.ask(b"send", b"rcpt", b"room"), "Message added to storage!")


class MetricsTests(NodeClientsTestCase):
    def test_mailbox_messages_counts_every_node(self) -> None:
        """chatd_mailbox_messages counts the mail waiting in the database,
        whichever node queued it, and falls once it is taken."""
        import re
        import urllib.request

        require_postgres()
        uri = pgserver.fresh_database()
        port = pgserver.free_port()
        watched = Cluster(
            self, uri, "--node-lease", "2", "--metrics", f"tcp:{port}:interface=127.0.0.1"
        )
        (a,) = watched.start(1)
        (b,) = Cluster(self, uri, "--node-lease", "2").start(1)

        def waiting() -> int:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                text = r.read().decode("utf-8")
            found = re.search(r"^chatd_mailbox_messages (\S+)$", text, re.M)
            assert found is not None, text
            return int(float(found.group(1)))

        sender = self.binary(b, "sender")
        self.binary(a, "rcpt")
        for i in range(7):
            self.assertEqual(sender.ask(b"send", b"rcpt", f"t{i}".encode()), "Message added to storage!")
        eventually(lambda: waiting() == 7, "seven messages counted")
        self.assertEqual(len(self.binary(b, "rcpt").receive()), 7)
        eventually(lambda: waiting() == 0, "the mailbox counted empty")


class ThreeNodesTests(SynchronousTestCase):
    def test_three_nodes(self) -> None:
        """Three nodes: one namespace, and each message reaches the users of
        the two other nodes once."""
        require_postgres()
        cluster = Cluster(self, pgserver.fresh_database())
        ports = cluster.start(3)
        users = []
        for i, port in enumerate(ports):
            client = LineClient(port, f"u{i}")
            self.addCleanup(client.close)
            users.append(client)
        mail = BinaryClient(ports[2], "mail")
        self.addCleanup(mail.close)
        taken = LineClient(ports[1])
        self.addCleanup(taken.close)
        taken.say("!nick U0")
        self.assertEqual(taken.expect(lambda l: l.startswith("!")), "!error name-taken u0 is taken")
        self.assertEqual(mail.users(), ["u0", "u1", "u2", "mail"])
        for i, client in enumerate(users):
            client.say(f"!sendmsg from {i}")
        for i, client in enumerate(users):
            got = sorted(l for l in client.quiet(0.5) if l.startswith("!msg"))
            self.assertEqual(got, [f"!msg u{j} from {j}" for j in range(3) if j != i])
        self.assertEqual(sorted(mail.receive()), [(f"u{j}", f"from {j}") for j in range(3)])

