"""Fair mail, deterministically: each sender's share of a mailbox, the notice
of full mailboxes, and the broadcast budget each peer host keeps."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from chatd.flood import HostBudgets
from chatd.hub import Hub
from chatd.rules import Limits, MailboxFull
from chatd.store import KeptUser, Mail, MemoryStore
from tests.support import Client, Server, command
from tests.test_limits import nick, register

ADDED = b"Message added to storage!"
# Command limits out of the way, so that only the rules under test apply.
ROOMY = dict(command_rate=1000.0, command_burst=1000)


def receive(client: Client) -> list[tuple[bytes, bytes]]:
    """Collect a binary client's mail as (sender, text) pairs."""
    client.send(command(b"receive"))
    frames = client.frames()
    assert int(frames[0]) * 2 == len(frames) - 1, frames
    return list(zip(frames[1::2], frames[2::2]))


class ShareTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.server = Server(mailbox_size=20, mailbox_share=5, **ROOMY)
        self.bob = register(self.server, b"bob", host="10.0.0.1")

    def test_one_sender_takes_its_share_others_still_fit(self) -> None:
        eve = register(self.server, b"eve", host="10.0.0.2")
        for n in range(5):
            eve.send(command(b"send", b"bob", b"e%d" % n))
            self.assertEqual(eve.frames(), [ADDED])
        eve.send(command(b"send", b"bob", b"e5"))
        self.assertEqual(eve.frames(), [b"Mailbox of 'bob' is full!"])
        self.assertFalse(eve.closed)
        carol = register(self.server, b"carol", host="10.0.0.3")
        carol.send(command(b"send", b"bob", b"hi"))
        self.assertEqual(carol.frames(), [ADDED])
        liz = nick(self.server, "liz", host="10.0.0.4")
        liz.send(b"!sendto bob hello\n")
        self.assertEqual(liz.lines(), [])
        self.assertEqual(
            receive(self.bob),
            [(b"eve", b"e%d" % n) for n in range(5)] + [(b"carol", b"hi"), (b"liz", b"hello")],
        )

    def test_the_share_is_back_once_mail_is_taken(self) -> None:
        eve = register(self.server, b"eve", host="10.0.0.2")
        for n in range(6):
            eve.send(command(b"send", b"bob", b"%d" % n))
        eve.take()
        self.assertEqual(len(receive(self.bob)), 5)
        eve.send(command(b"send", b"bob", b"again"))
        self.assertEqual(eve.frames(), [ADDED])

    def test_the_share_follows_the_name_not_its_case(self) -> None:
        liz = nick(self.server, "Liz", host="10.0.0.4")
        for n in range(5):
            liz.send(b"!sendto bob %d\n" % n)
        liz.send(b"!changenickname LIZ\n!sendto bob more\n")
        self.assertEqual(
            liz.lines()[-1], "!error mailbox-full mailbox full, not delivered to: bob"
        )

    def test_a_handful_of_flooders_leave_room(self) -> None:
        """Three senders broadcasting without end fill three shares, no more."""
        self.server = Server(
            mailbox_size=30, mailbox_share=5, broadcast_rate=1000.0, broadcast_burst=1000, **ROOMY
        )
        self.bob = register(self.server, b"bob", host="10.0.0.1")
        flooders = [nick(self.server, f"f{i}", host=f"10.0.1.{i}") for i in range(3)]
        for flooder in flooders:
            flooder.send(b"!sendmsg spam\n" * 50)
        honest = nick(self.server, "honest", host="10.0.2.1")
        other = register(self.server, b"other", host="10.0.2.2")
        for n in range(5):
            honest.send(b"!sendmsg h%d\n" % n)
            other.send(command(b"sendall", b"o%d" % n))
        self.assertEqual([line for line in honest.lines() if "!error" in line], [])
        self.assertEqual(other.frames(), [ADDED] * 5)
        mail = receive(self.bob)
        self.assertEqual(len(mail), 15 + 10)
        self.assertEqual([t for s, t in mail if s == b"honest"], [b"h%d" % n for n in range(5)])
        self.assertEqual([t for s, t in mail if s == b"other"], [b"o%d" % n for n in range(5)])

    def test_new_names_do_not_renew_a_hosts_share(self) -> None:
        """A sender that changes its name, or registers more, shares its host's share."""
        server = Server(mailbox_size=20, mailbox_share=5, mailbox_host_share=8, **ROOMY)
        bob = register(server, b"bob", host="10.0.0.1")
        liz = nick(server, "liz0", host="10.0.0.4")
        for n in range(3):
            liz.send(b"".join(b"!sendto bob %d\n" % i for i in range(5)))
            liz.send(b"!changenickname liz%d\n" % (n + 1))
        refused = [line for line in liz.lines() if line.startswith("!error mailbox-full")]
        self.assertEqual(len(refused), 15 - 8)
        alias = register(server, b"alias", host="10.0.0.4")
        alias.send(command(b"send", b"bob", b"more"))
        self.assertEqual(alias.frames(), [b"Mailbox of 'bob' is full!"])
        # Another host's mail still fits.
        carol = register(server, b"carol", host="10.0.0.3")
        carol.send(command(b"send", b"bob", b"hi"))
        self.assertEqual(carol.frames(), [ADDED])
        self.assertEqual(len(receive(bob)), 9)
        # Taking the mail gives the host its share back.
        alias.send(command(b"send", b"bob", b"again"))
        self.assertEqual(alias.frames(), [ADDED])

    def test_kept_mail_counts_after_a_restart(self) -> None:
        class Kept(MemoryStore):
            def load(self) -> list[KeptUser]:
                mail = [Mail(n, "eve", f"m{n}") for n in range(5)]
                return [KeptUser(1, "bob", "10.0.0.1", mail)]

        hub = Hub(Limits(mailbox_size=20, mailbox_share=5), Kept())
        eve, _ = hub.register("Eve", "10.0.0.2")
        carol, _ = hub.register("carol", "10.0.0.3")
        with self.assertRaises(MailboxFull):
            hub.say_to(eve, "bob", "one more")
        hub.say_to(carol, "bob", "fits")
        self.assertEqual(len(hub.take_mail(hub.find("bob"))), 6)


class NoticeTests(SynchronousTestCase):
    """Full mailboxes are named to a broadcaster once, not on every broadcast."""

    def setUp(self) -> None:
        self.server = Server(mailbox_size=2, mailbox_share=2, **ROOMY)
        self.gone = [register(self.server, b"gone%d" % i, host=f"10.0.0.{i}") for i in range(3)]
        for client in self.gone:
            client.close()  # registered, and never polls again
        self.filler = register(self.server, b"filler", host="10.0.1.1")
        for _ in range(2):
            self.filler.send(command(b"sendall", b"fill"))
        self.filler.take()

    def test_line_sender_told_once(self) -> None:
        self.filler.send(command(b"logout"))
        liz = nick(self.server, "liz", host="10.0.2.1")
        liz.send(b"!sendmsg one\n!sendmsg two\n!sendmsg three\n")
        self.assertEqual(
            liz.lines(),
            ["!error mailbox-full mailbox full, not delivered to: gone0 gone1 gone2"],
        )

    def test_binary_sender_told_once(self) -> None:
        self.filler.send(command(b"sendall", b"more"))
        self.assertEqual(
            self.filler.frames(),
            [b"Message added to storage, but mailboxes of 'gone0', 'gone1', 'gone2' are full!"],
        )
        self.filler.send(command(b"sendall", b"again"))
        self.assertEqual(self.filler.frames(), [ADDED])

    def test_told_again_once_it_filled_again(self) -> None:
        self.filler.send(command(b"logout"))
        liz = nick(self.server, "liz", host="10.0.2.1")
        liz.send(b"!sendmsg one\n")
        liz.take()
        back = self.server.connect("10.0.0.1")
        back.send(command(b"register", b"gone1"))
        self.assertEqual(back.frames(), [b"Nice to see you, gone1"])
        self.assertEqual(len(receive(back)), 2)
        liz.send(b"!sendmsg a\n!sendmsg b\n!sendmsg c\n!sendmsg d\n")
        self.assertEqual(liz.lines(), ["!error mailbox-full mailbox full, not delivered to: gone1"])
        self.assertEqual(receive(back), [(b"liz", b"a"), (b"liz", b"b")])

    def test_private_messages_always_told(self) -> None:
        """A private message names one user the sender chose: each refusal is news."""
        liz = nick(self.server, "liz", host="10.0.2.1")
        liz.send(b"!sendto gone0 x\n!sendto gone0 y\n")
        self.assertEqual(
            liz.lines(), ["!error mailbox-full mailbox full, not delivered to: gone0"] * 2
        )


class BroadcastBudgetTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.server = Server(broadcast_rate=1.0, broadcast_burst=3, **ROOMY)
        self.reader = nick(self.server, "reader", host="10.0.9.9")

    def heard(self) -> list[str]:
        return [line for line in self.reader.lines() if line.startswith("!msg ")]

    def test_burst_then_rate(self) -> None:
        flooder = nick(self.server, "f", host="10.0.0.1")
        self.reader.take()
        flooder.send(b"".join(b"!sendmsg %d\n" % n for n in range(6)))
        self.assertEqual(self.heard(), ["!msg f 0", "!msg f 1", "!msg f 2"])
        self.server.clock.advance(0.99)
        self.assertEqual(self.heard(), [])
        self.server.clock.advance(0.01)
        self.assertEqual(self.heard(), ["!msg f 3"])
        self.server.clock.pump([1.0] * 2)
        self.assertEqual(self.heard(), ["!msg f 4", "!msg f 5"])

    def test_reconnecting_gets_no_fresh_burst(self) -> None:
        first = nick(self.server, "f", host="10.0.0.1", port=1)
        first.send(b"!sendmsg 0\n!sendmsg 1\n!sendmsg 2\n")
        first.close()
        again = nick(self.server, "g", host="10.0.0.1", port=2)
        self.reader.take()
        again.send(b"!sendmsg 3\n!sendmsg 4\n")
        self.assertEqual(self.heard(), [])
        self.server.clock.advance(1.0)
        self.assertEqual(self.heard(), ["!msg g 3"])
        # Another host has a budget of its own.
        other = nick(self.server, "o", host="10.0.0.2")
        self.reader.take()
        other.send(b"!sendmsg x\n")
        self.assertEqual(self.heard(), ["!msg o x"])

    def test_connections_of_one_host_share_it(self) -> None:
        a = nick(self.server, "a", host="10.0.0.1", port=1)
        b = register(self.server, b"b", host="10.0.0.1", port=2)
        self.reader.take()
        a.send(b"!sendmsg a0\n!sendmsg a1\n")
        b.send(command(b"sendall", b"b0") + command(b"sendall", b"b1"))
        self.assertEqual(self.heard(), ["!msg a a0", "!msg a a1", "!msg b b0"])
        self.assertEqual(b.frames(), [ADDED])
        a.send(b"!sendmsg a2\n")
        self.server.clock.advance(0.99)
        self.assertEqual(self.heard(), [])
        self.server.clock.advance(0.01)
        # One token came back, and one of the two waiting broadcasts took it.
        self.assertEqual(len(self.heard()), 1)
        self.server.clock.advance(1.0)
        self.assertEqual(len(self.heard()), 1)
        self.assertEqual(b.frames(), [ADDED])

    def test_other_commands_not_held(self) -> None:
        flooder = nick(self.server, "f", host="10.0.0.1")
        flooder.send(b"!sendmsg 0\n!sendmsg 1\n!sendmsg 2\n")
        flooder.take()
        flooder.send(b"!users\n")
        self.assertEqual(flooder.lines(), ["!users 2 reader f"])

    def test_a_held_broadcast_costs_one_command(self) -> None:
        """A broadcast held for the host's budget is counted once against the
        connection's command rate, not again when it runs."""
        server = Server(broadcast_rate=1.0, broadcast_burst=1, command_rate=1.0, command_burst=5)
        sender = nick(server, "f", host="10.0.0.1")
        sender.send(b"!sendmsg 0\n!sendmsg 1\n")
        server.clock.advance(1.0)
        sender.take()
        # Five command tokens: !nick, two broadcasts, one back after a second.
        sender.send(b"!users\n" * 5)
        self.assertEqual(len(sender.lines()), 3)

    def test_kept_budgets_are_bounded(self) -> None:
        budgets = HostBudgets(1.0, 3, self.server.clock)
        for n in range(10_000):
            budgets.spend(f"10.{n // 65536}.{n // 256 % 256}.{n % 256}")
            self.server.clock.advance(0.1)
        # Only hosts that spent some budget in the last few seconds are kept.
        self.assertLess(len(budgets), 600)
