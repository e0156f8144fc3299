"""A Twisted client for PyChat's line protocol: commands out, parsed lines in."""

from __future__ import annotations

from typing import Callable, NamedTuple

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.endpoints import HostnameEndpoint, connectProtocol
from twisted.internet.interfaces import IReactorTCP, IReactorTime
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure

from chatd.rules import fold

# PyChat's port, one of the two chatd listens on by default.
DEFAULT_PORT = 5000

# How many arguments each kind of line has; the last one takes the rest.
_ARITY = {
    "msg": 2,
    "privmsg": 2,
    "error": 2,
    "help": 2,
    "poke": 2,
    "joined": 1,
    "left": 1,
    "changenickname": 2,
}


class ServerLine(NamedTuple):
    """One line from the server: its kind (C{msg}, C{users}, ...) and arguments.

    A line that is no known kind has kind C{""} and the whole line as argument.
    """

    kind: str
    args: list[str]


def parse(line: str) -> ServerLine:
    """Split a server line into its kind and arguments."""
    word, _, rest = line.partition(" ")
    kind = word[1:] if word.startswith("!") else ""
    if kind == "users":
        return ServerLine(kind, rest.split()[1:])
    arity = _ARITY.get(kind)
    args = rest.split(" ", arity - 1) if arity else []
    if len(args) != arity or not all(args):
        return ServerLine("", [line])
    return ServerLine(kind, args)


class NickRefused(Exception):
    """The server refused a nick; the connection is open for another try."""

    def __init__(self, code: str, text: str) -> None:
        super().__init__(text)
        self.code = code


class LineClient(LineReceiver):
    """One connection to a line-protocol server.

    Every line after the nick is taken goes to C{on_line}; C{on_lost} is
    called once the connection is gone. The client keeps track of its own
    nick and of the user list, for whoever shows them.
    """

    delimiter = b"\n"
    # The server caps lines it reads, not the user lists it writes.
    MAX_LENGTH = 1 << 20

    def __init__(
        self,
        on_line: Callable[[ServerLine], None],
        on_lost: Callable[[Failure], None],
    ) -> None:
        self.on_line = on_line
        self.on_lost = on_lost
        self.nick: str | None = None
        self.users: list[str] = []
        self.gone = False
        self._naming: tuple[str, Deferred[list[str]]] | None = None

    # Commands

    def take_nick(self, name: str) -> Deferred[list[str]]:
        """Send C{!nick}; fires with the user list, or fails with L{NickRefused}."""
        d: Deferred[list[str]] = Deferred()
        self._naming = (name, d)
        self._send("!nick", name)
        return d

    def say(self, text: str) -> None:
        self._send("!sendmsg", text)

    def say_to(self, name: str, text: str) -> None:
        self._send("!sendto", name, text)

    def poke(self, name: str) -> None:
        self._send("!poke", name)

    def rename(self, new: str) -> None:
        self._send("!changenickname", new)

    def ask_users(self) -> None:
        self._send("!users")

    def quit(self) -> None:
        self._send("!quit")

    def _send(self, *words: str) -> None:
        self.sendLine(" ".join(words).encode("utf-8"))

    # What the server sends

    def lineReceived(self, data: bytes) -> None:
        line = parse(data.rstrip(b"\r").decode("utf-8", "replace"))
        self._track(line)
        if self._naming is not None and line.kind in ("users", "error"):
            self._answer_nick(line)
        else:
            self.on_line(line)

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.gone = True
        failure = reason or Failure(ConnectionDone())
        if self._naming is not None:
            _, d = self._naming
            self._naming = None
            d.errback(failure)
        self.on_lost(failure)

    def _answer_nick(self, line: ServerLine) -> None:
        assert self._naming is not None
        name, d = self._naming
        self._naming = None
        if line.kind == "users":
            self.nick = name
            d.callback(line.args)
        else:
            d.errback(NickRefused(*line.args))

    def _track(self, line: ServerLine) -> None:
        """Keep the nick and the user list up to date."""
        if line.kind == "users":
            self.users = list(line.args)
        elif line.kind == "joined":
            self.users.append(line.args[0])
        elif line.kind == "left":
            self.users = [u for u in self.users if fold(u) != fold(line.args[0])]
        elif line.kind == "changenickname":
            old, new = line.args
            self.users = [new if fold(u) == fold(old) else u for u in self.users]
            if self.nick is not None and fold(self.nick) == fold(old):
                self.nick = new


def connect(
    reactor: IReactorTCP | IReactorTime,
    host: str,
    port: int,
    on_line: Callable[[ServerLine], None],
    on_lost: Callable[[Failure], None],
) -> Deferred[LineClient]:
    """Connect to the line protocol of the server at C{host}:C{port}."""
    endpoint = HostnameEndpoint(reactor, host, port)
    return connectProtocol(endpoint, LineClient(on_line, on_lost))
