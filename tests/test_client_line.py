"""The line-protocol client: parsing the server's lines, taking a nick, sending commands."""

from __future__ import annotations

from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from chatd.client.line import LineClient, NickRefused, ServerLine, parse


class ParseTests(SynchronousTestCase):
    def test_kinds(self) -> None:
        cases = {
            "!msg bob hi  there": ("msg", ["bob", "hi  there"]),
            "!privmsg bob psst": ("privmsg", ["bob", "psst"]),
            "!poke bob alice": ("poke", ["bob", "alice"]),
            "!joined bob": ("joined", ["bob"]),
            "!left bob": ("left", ["bob"]),
            "!changenickname bob rob": ("changenickname", ["bob", "rob"]),
            "!users 2 alice bob": ("users", ["alice", "bob"]),
            "!error name-taken bob is taken": ("error", ["name-taken", "bob is taken"]),
            "!help !poke NAME: poke": ("help", ["!poke", "NAME: poke"]),
        }
        for text, expected in cases.items():
            self.assertEqual(parse(text), expected)

    def test_unknown(self) -> None:
        for text in ["hello", "!shout x", "!msg bob", "!joined", "!poke a"]:
            self.assertEqual(parse(text), ServerLine("", [text]))


class LineClientTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.lines: list[ServerLine] = []
        self.client = LineClient(self.lines.append, lambda reason: None)
        self.transport = StringTransport()
        self.client.makeConnection(self.transport)

    def receive(self, *lines: str) -> None:
        self.client.dataReceived("".join(text + "\n" for text in lines).encode("utf-8"))

    def test_nick_refused_then_taken(self) -> None:
        refused = self.client.take_nick("bob")
        self.assertEqual(self.transport.value(), b"!nick bob\n")
        self.receive("!error name-taken bob is taken")
        error = self.failureResultOf(refused, NickRefused).value
        self.assertEqual((error.code, str(error)), ("name-taken", "bob is taken"))
        taken = self.client.take_nick("alice")
        self.receive("!users 2 bob alice")
        self.assertEqual(self.successResultOf(taken), ["bob", "alice"])
        self.assertEqual((self.client.nick, self.lines), ("alice", []))

    def test_tracks_nick_and_users(self) -> None:
        self.client.take_nick("alice")
        self.receive(
            "!users 1 alice",
            "!joined bob",
            "!joined carol",
            "!left BOB",
            "!changenickname alice al",
        )
        self.assertEqual((self.client.nick, self.client.users), ("al", ["al", "carol"]))
        self.assertEqual(
            [kind for kind, _ in self.lines], ["joined", "joined", "left", "changenickname"]
        )

    def test_commands(self) -> None:
        self.client.say("hi all")
        self.client.say_to("bob", "psst")
        self.client.poke("bob")
        self.client.rename("al")
        self.client.ask_users()
        self.client.quit()
        self.assertEqual(
            self.transport.value().decode("utf-8").splitlines(),
            [
                "!sendmsg hi all",
                "!sendto bob psst",
                "!poke bob",
                "!changenickname al",
                "!users",
                "!quit",
            ],
        )
