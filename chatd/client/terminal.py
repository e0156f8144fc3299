"""The chat screen: messages scroll above an input line they never clobber.

prompt_toolkit owns the input line (editing, history, completion) and
prints every incoming line above it; Twisted's asyncio reactor runs the
connection on the same event loop, so no threads are involved.
"""

from __future__ import annotations

import asyncio
from typing import Callable, TypeVar

from prompt_toolkit import PromptSession, print_formatted_text
from prompt_toolkit.application.current import get_app
from prompt_toolkit.completion import WordCompleter
from prompt_toolkit.patch_stdout import patch_stdout
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionClosed
from twisted.internet.interfaces import IReactorTCP, IReactorTime
from twisted.python.failure import Failure

from chatd.client import line, render
from chatd.client.line import LineClient, NickRefused, ServerLine

T = TypeVar("T")

# The commands of the input line, as /help lists them.
HELP = (
    ("/msg NAME TEXT", "send TEXT to NAME alone"),
    ("/poke NAME", "poke NAME, for everyone to see"),
    ("/nick NEW", "change your nick"),
    ("/users", "list who is online"),
    ("/help", "show this help"),
    ("/quit", "leave the chat (Ctrl-D does too)"),
)
COMMANDS = [usage.split()[0] for usage, _ in HELP]


class Leave(Exception):
    """The user asked to leave."""


class ServerGone(Exception):
    """The connection closed while the user was typing."""


async def wait(d: Deferred[T]) -> T:
    """Await a Deferred from asyncio code."""
    return await d.asFuture(asyncio.get_running_loop())


class Screen:
    """Output that scrolls above one input line."""

    def __init__(
        self, prompt: Callable[[], str], status: Callable[[], str], words: Callable[[], list[str]]
    ) -> None:
        self.session: PromptSession[str] = PromptSession(
            prompt,
            bottom_toolbar=status,
            completer=WordCompleter(words, ignore_case=True, WORD=True),
            complete_while_typing=False,
            erase_when_done=True,
        )

    def show(self, fragments: render.Fragments) -> None:
        """Print one line above the input line, stamped with the time."""
        print_formatted_text(render.stamped(fragments), style=render.STYLE)

    async def read(self) -> str:
        """The next line the user enters; L{Leave} on Ctrl-D or Ctrl-C."""
        try:
            return await self.session.prompt_async()
        except (EOFError, KeyboardInterrupt):
            raise Leave()

    async def ask(self, question: str) -> str:
        """One answer to a question, outside the chat's history."""
        try:
            return await PromptSession[str]().prompt_async(question)
        except (EOFError, KeyboardInterrupt):
            raise Leave()

    def interrupt(self, reason: Exception) -> None:
        """Stop waiting for input: the pending L{read} or L{ask} raises C{reason}."""
        app = get_app()
        if app.is_running and not app.future.done():  # type: ignore[union-attr]
            app.exit(exception=reason)


class Chat:
    """One chat session with a line-protocol server, driven by a person."""

    def __init__(self, reactor: IReactorTCP | IReactorTime, host: str, port: int) -> None:
        self.reactor = reactor
        self.host, self.port = host, port
        self.where = f"{host}:{port}"
        self._client: LineClient | None = None
        self.screen = Screen(self._prompt, self._status, self._words)
        self._leaving = False
        self._lost: Deferred[None] = Deferred()

    async def run(self, nick: str | None) -> int:
        """Connect, take a nick, chat; the exit status."""
        try:
            self._client = await wait(
                line.connect(self.reactor, self.host, self.port, self._on_line, self._on_lost)
            )
        except Exception as e:  # Refused, unreachable, no such host: all the same here.
            self.screen.show(render.error(f"cannot connect to {self.where}: {e}"))
            return 1
        with patch_stdout():
            try:
                await self._take_nick(nick)
                await self._talk()
            except ServerGone:
                self.screen.show(render.error(f"the server at {self.where} closed the connection"))
                return 1
            except Leave:
                await self._leave()
        return 0

    # Phases

    @property
    def client(self) -> LineClient:
        assert self._client is not None, "not connected yet"
        return self._client

    async def _take_nick(self, nick: str | None) -> None:
        self.screen.show(render.info(f"connected to {self.where}"))
        while True:
            while not nick:
                nick = (await self.screen.ask("Nick: ")).strip()
            self._check_connected()
            try:
                names = await wait(self.client.take_nick(nick))
            except NickRefused as e:
                self.screen.show(render.error(str(e)))
                nick = None
            except ConnectionClosed:
                raise ServerGone()
            else:
                self.screen.show(render.info(f"you are {nick}; /help lists the commands"))
                self._on_line(ServerLine("users", names))
                return

    async def _talk(self) -> None:
        while True:
            self._check_connected()
            self.handle(await self.screen.read())

    async def _leave(self) -> None:
        if not self.client.gone:
            self._leaving = True
            self.client.quit()
            self.client.transport.loseConnection()
            await wait(self._lost)
        self.screen.show(render.info("bye"))

    def _check_connected(self) -> None:
        if self.client.gone:
            raise ServerGone()

    # The input line

    def handle(self, text: str) -> None:
        """Act on one line the user entered."""
        text = text.strip()
        if text.startswith("//"):
            self._say(text[1:])
        elif text.startswith("/"):
            name, _, rest = text.partition(" ")
            if name.lower() in COMMANDS:
                getattr(self, "do_" + name[1:].lower())(rest.strip())
            else:
                self.screen.show(render.error(f"no command {name}; /help lists them"))
        elif text:
            self._say(text)

    def _say(self, text: str) -> None:
        me = self.client.nick
        assert me is not None, "chatting before the nick is taken"
        self.client.say(text)
        self.screen.show(render.said(me, text, me))

    def do_msg(self, rest: str) -> None:
        name, _, text = rest.partition(" ")
        if not name or not text.strip():
            self._usage("/msg")
            return
        self.client.say_to(name, text.strip())
        self.screen.show(render.whispered_to(name, text.strip(), self._me()))

    def do_poke(self, rest: str) -> None:
        self._one_word("/poke", rest, self.client.poke)

    def do_nick(self, rest: str) -> None:
        self._one_word("/nick", rest, self.client.rename)

    def do_users(self, rest: str) -> None:
        self.client.ask_users()

    def do_help(self, rest: str) -> None:
        for usage, text in HELP:
            self.screen.show(render.info(f"{usage:<16} {text}"))
        self.screen.show(render.info("anything else is said to everyone; Tab completes"))

    def do_quit(self, rest: str) -> None:
        raise Leave()

    def _one_word(self, command: str, rest: str, act: Callable[[str], None]) -> None:
        if len(rest.split()) != 1:
            self._usage(command)
        else:
            act(rest)

    def _usage(self, command: str) -> None:
        usage = next(u for u, _ in HELP if u.split()[0] == command)
        self.screen.show(render.error(f"usage: {usage}"))

    # The connection

    def _on_line(self, server_line: ServerLine) -> None:
        self.screen.show(render.server_line(server_line, self._me()))

    def _on_lost(self, reason: Failure) -> None:
        self._lost.callback(None)
        if not self._leaving:
            self.screen.interrupt(ServerGone())

    # What the screen shows around the input line

    def _me(self) -> str | None:
        return None if self._client is None else self._client.nick

    def _prompt(self) -> str:
        return f"{self._me() or ''}> "

    def _status(self) -> str:
        users = 0 if self._client is None else len(self._client.users)
        return f" {self._me()} @ {self.where} · {users} online · /help · Ctrl-D leaves "

    def _words(self) -> list[str]:
        return [*COMMANDS, *([] if self._client is None else self._client.users)]
