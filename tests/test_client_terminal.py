"""The terminal client: its parts alone, then driven in tmux as a person would."""

from __future__ import annotations

from typing import Callable

from prompt_toolkit.formatted_text import FormattedText
from twisted.internet import reactor
from twisted.internet.endpoints import serverFromString
from twisted.internet.protocol import Factory, Protocol
from twisted.trial.unittest import SynchronousTestCase, TestCase

from chatd.client import BinaryClientProtocol, Message, connect, line, render
from chatd.client.line import LineClient, ServerLine, parse
from tests.live import LiveServer, eventually
from tests.tmux import TMUX, Terminal, client_argv


def text_of(fragments: render.Fragments | FormattedText) -> str:
    return "".join(fragment[1] for fragment in fragments)


def typed_below(message: str, prompt: str) -> Callable[[str], bool]:
    """Whether a screen shows the input line C{prompt} intact below C{message}."""

    def ok(screen: str) -> bool:
        lines = screen.splitlines()
        said = [i for i, text in enumerate(lines) if text.endswith(message)]
        return bool(said) and prompt in lines and said[0] < lines.index(prompt)

    return ok


class RenderTests(SynchronousTestCase):
    def show(self, text: str, me: str | None = "alice") -> str:
        return text_of(render.server_line(parse(text), me))

    def test_lines(self) -> None:
        cases = {
            "!msg bob hi": "<bob> hi",
            "!privmsg bob psst": "*bob* psst",
            "!poke bob carol": "* bob pokes carol!",
            "!poke bob ALICE": "* bob pokes you!",
            "!joined bob": "--> bob joined",
            "!left bob": "<-- bob left",
            "!changenickname bob rob": "-- bob is now known as rob",
            "!changenickname al alice": "-- you are now known as alice",
            "!users 2 alice bob": "-- 2 online: alice, bob",
            "!error name-taken bob is taken": "!! bob is taken",
            "something else": "something else",
        }
        for text, shown in cases.items():
            self.assertEqual(self.show(text), shown)

    def test_no_terminal_escapes(self) -> None:
        """A server that is not chatd cannot drive the user's terminal."""
        self.assertEqual(self.show("!msg b\x1b[2J x\x07"), "<b\ufffd[2J> x\ufffd")

    def test_mention(self) -> None:
        styles = [style for style, _ in render.server_line(parse("!msg bob hi Alice"), "alice")]
        self.assertIn("class:mention", styles)

    def test_stamped(self) -> None:
        shown = render.stamped(render.info("x"), now=lambda: 0.0)
        self.assertRegex(text_of(shown), r"^\d\d:\d\d -- x$")


class TerminalTests(TestCase):
    """The client in a real terminal against a real chatd."""

    if TMUX is None:
        skip = "tmux is not installed (apt-get install tmux): these need a real terminal"

    async def setUp(self) -> None:
        self.server = await LiveServer.start(self)

    async def binary(self, name: str) -> BinaryClientProtocol:
        client = await connect(reactor, "127.0.0.1", self.server.port)
        self.addCleanup(client.close)
        await client.register(name)
        return client

    async def line_user(self, name: str) -> tuple[LineClient, list[ServerLine]]:
        seen: list[ServerLine] = []
        client = await line.connect(
            reactor, "127.0.0.1", self.server.port, seen.append, lambda _: None
        )
        self.addCleanup(client.transport.loseConnection)
        await client.take_nick(name)
        return client, seen

    async def chat(self, *args: str) -> Terminal:
        return Terminal(self, client_argv(self.server.port, *args))

    async def test_chat(self) -> None:
        """Join, keep a half-typed line while messages arrive, send it, quit."""
        term = await self.chat("-n", "alice")
        await term.shows("you are alice")
        bob = await self.binary("bob")
        await term.shows("--> bob joined")
        term.type("half a line")
        await term.shows("alice> half a line")
        await bob.sendall("hello alice")
        await bob.send("alice", "psst")
        await term.shows("*bob* psst")
        await eventually(
            term.screen, typed_below("<bob> hello alice", "alice> half a line"), "the typed line"
        )
        term.type(" done")
        term.press("Enter")
        await eventually(bob.receive, lambda mail: mail != [], "alice's message")
        await term.shows("<alice> half a line done")
        term.enter("/quit")
        screen = await term.shows("[exited 0]")
        self.assertIn("-- bye", screen)
        await eventually(bob.users, lambda names: names == ["bob"], "alice to leave")

    async def test_commands(self) -> None:
        """Each command, and what others do, shown readably."""
        term = await self.chat("-n", "alice")
        await term.shows("you are alice")
        carol, seen = await self.line_user("carol")
        steps: list[tuple[Callable[[], None], str]] = [
            (lambda: term.enter("/msg carol psst"), "-> *carol* psst"),
            (lambda: carol.say("hi alice"), "<carol> hi alice"),
            (lambda: carol.poke("alice"), "* carol pokes you!"),
            (lambda: term.enter("/poke carol"), "* alice pokes carol!"),
            (lambda: term.enter("/nick alicia"), "you are now known as alicia"),
            (lambda: term.enter("/users"), "-- 2 online: alicia, carol"),
            (lambda: term.enter("/help"), "/msg NAME TEXT"),
            (lambda: term.enter("/bogus"), "!! no command /bogus"),
            (lambda: term.enter("/msg nobody hi"), "!! nobody is called nobody"),
            (carol.quit, "<-- carol left"),
            (lambda: term.press("C-d"), "[exited 0]"),
        ]
        for act, shown in steps:
            act()
            await term.shows(shown)
        self.assertEqual(
            [kind for kind, _ in seen],
            ["privmsg", "poke", "poke", "changenickname"],
        )

    async def test_nick_asked_again(self) -> None:
        """A taken nick is asked for again; the input line has editing and history."""
        bob = await self.binary("bob")
        term = await self.chat()
        await term.shows("Nick:")
        term.enter("bob")
        await term.shows("!! bob is taken")
        term.enter("dave")
        await term.shows("you are dave")
        term.enter("first message")
        await eventually(
            bob.receive, lambda mail: mail == [Message("dave", "first message")], "dave's line"
        )
        term.press("Up")
        await term.shows("dave> first message")
        term.press(*["BSpace"] * len("message"))
        term.enter("try")
        await eventually(
            bob.receive, lambda mail: mail == [Message("dave", "first try")], "the edited line"
        )

    async def test_server_goes_away(self) -> None:
        term = await self.chat("-n", "alice")
        await term.shows("you are alice")
        term.type("unsent")
        await term.shows("alice> unsent")
        await self.server.go_away()
        screen = await term.shows("[exited 1]")
        self.assertIn(
            f"!! the server at 127.0.0.1:{self.server.port} closed the connection", screen
        )

    async def test_cannot_connect(self) -> None:
        listening = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(
            Factory.forProtocol(Protocol)
        )
        port = listening.getHost().port
        await listening.stopListening()
        term = Terminal(self, client_argv(port, "-n", "alice"))
        screen = await term.shows("[exited 1]")
        self.assertIn(f"!! cannot connect to 127.0.0.1:{port}", screen)
