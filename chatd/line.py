"""The PyChat C{!} line protocol: a thin translator between lines and the hub."""

from __future__ import annotations

from typing import Callable

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure

from chatd import linewire, tally
from chatd.deadline import cancelled
from chatd.delivery import HubSession
from chatd.flood import FakeLag, HostBudgets, Later
from chatd.hub import Hub
from chatd.names import LineUser
from chatd.rules import BadArguments, ChatError, Ending, check_text
from chatd.store import StoreFailed

COMMANDS = frozenset(
    {"nick", "changenickname", "users", "sendmsg", "sendto", "poke", "help", "quit"}
)
# Commands a client may send before it has a name.
_BEFORE_NICK = frozenset({"nick", "help", "quit"})
# Each command's keys in the tally, ok and failed.
_OK = {name: tally.command_key("line", name, "ok") for name in COMMANDS}
_FAILED = {
    name: tally.command_key("line", name, "error") for name in [*COMMANDS, tally.UNKNOWN]
}


class LineProtocol(HubSession, LineReceiver):
    """One PyChat-protocol connection."""

    log = Logger()
    protocol_name = "line"
    delimiter = b"\n"
    # A line user may read quietly for as long as it likes; a half-open
    # socket is found by TCP keepalive, or by the output backlog bound.
    idle_timeout: float | None = None

    def __init__(
        self,
        hub: Hub,
        clock: IReactorTime,
        hosts: HostBudgets | None = None,
        host: str = "local",
    ) -> None:
        self.hub = hub
        self.clock = clock
        self.user: LineUser | None = None
        # Room for the CR that may come before the LF; lineReceived checks exactly.
        self.MAX_LENGTH = hub.limits.max_line_length + 1
        self._flush: IDelayedCall | None = None
        self._seen_lf = False
        # The peer host: what its users send shares one host share of a mailbox.
        self.host = host
        self.lag = FakeLag(self, hub.limits, clock, hosts, host)
        self._gone = False

    # Framing

    def dataReceived(self, data: bytes) -> None:
        if self.transport.disconnecting:
            return
        self._flush = cancelled(self._flush)
        # A read with an LF in it shows a client that ends its lines: what
        # it has buffered is the head of a line, never a whole command.
        if not self._seen_lf and b"\n" in data:
            self._seen_lf = True
        # All that the commands of one read send goes out as one write a session.
        with self.hub.batch():
            # A client that has never ended a line sends one command per
            # send(), as PyChat's own client does: a read that starts a new
            # command ends the pending one. While the client is held for
            # flooding, the end is marked in the buffer, to be parsed in turn.
            if not self._seen_lf and data[:1] == b"!" and self._buffer:
                if self.paused:
                    self._buffer += self.delimiter
                else:
                    self._flushPartial()
            super().dataReceived(data)
        self.lag.check(len(self._buffer))
        # Only a client that has never ended a line is flushed by the clock;
        # once one has, a partial line waits for its LF however slow it is.
        if (
            self._buffer
            and not self._seen_lf
            and not self.transport.disconnecting
            and not self.paused
        ):
            self._flush = self.clock.callLater(
                self.hub.limits.line_flush, self._flushPartial
            )

    def ends_every_line(self) -> None:
        """The transport ends every line itself (a WebSocket message does): a
        partial line waits for the rest, and the line-flush timer never applies."""
        self._seen_lf = True

    def _flushPartial(self) -> None:
        """Take a partial line that has waited long enough as a whole one."""
        self._flush = None
        if self._buffer and not self.transport.disconnecting and not self.paused:
            with self.hub.batch():
                self.lineReceived(self.clearLineBuffer())

    def lineReceived(self, line: bytes) -> None:
        self.lag.command()
        raw = line
        if line.endswith(b"\r"):
            line = line[:-1]
        if len(line) > self.hub.limits.max_line_length:
            self.lineLengthExceeded(line)
            return
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            self.hub.tally.commands[_FAILED[tally.UNKNOWN]] += 1
            self._error("bad-encoding", "lines must be UTF-8")
            return
        parts = text.split(None, 1)
        if parts:
            try:
                self._dispatch(parts[0], parts[1] if len(parts) > 1 else "")
            except Later:
                # First in line again, parsed once the hold is over.
                self._buffer = raw + self.delimiter + self._buffer

    def lineLengthExceeded(self, line: bytes) -> None:
        self._error(
            "line-too-long",
            f"a line has at most {self.hub.limits.max_line_length} bytes",
            close=tally.LINE_TOO_LONG,
        )

    def connectionLost(self, reason: Failure | None = None) -> None:
        self._flush = cancelled(self._flush)
        self._gone = True
        self.lag.stop()
        self._leave()

    def end(self, ending: Ending) -> None:
        """Close for a limit, telling the client which."""
        self._error(ending.value, linewire.CLOSING[ending], close=tally.ENDINGS[ending])

    # Output

    def _send(self, data: bytes) -> None:
        """Answer the client, in order with what the hub pushes it."""
        self.hub.send(self, data)

    # Commands

    def _dispatch(self, word: str, rest: str) -> None:
        name = word[1:].lower() if word.startswith("!") else ""
        known = name in COMMANDS
        counts = self.hub.tally.commands
        if self.user is None and name not in _BEFORE_NICK:
            counts[_FAILED[name if known else tally.UNKNOWN]] += 1
            self._error("nick-required", "send !nick NAME first", close=tally.NICK_REQUIRED)
        elif not known:
            counts[_FAILED[tally.UNKNOWN]] += 1
            self._error("unknown-command", f"{word} is not a command; try !help")
        else:
            handler: Callable[[str], Deferred[None] | None] = getattr(self, f"on_{name}")
            try:
                result = handler(rest)
            except ChatError as e:
                counts[_FAILED[name]] += 1
                self._error(e.code, str(e))
            else:
                counts[_OK[name]] += 1
                # Several nodes: the outcome comes once the database has it.
                if result is not None:
                    result.addErrback(self._failed)

    def on_nick(self, rest: str) -> None:
        if self.user is not None:
            raise BadArguments("you have a name; use !changenickname")
        name = self._one_argument("!nick NAME", rest)
        joined = self.hub.join_line(name, self)
        # (Deferred's isinstance goes through ABCMeta: ask the cheap way.)
        if isinstance(joined, LineUser):
            self._joined(joined)
            return None
        # What the client sends next waits until the name is decided.
        return self.lag.hold_until(joined.addCallback(self._joined).addErrback(self._failed))

    def _joined(self, user: LineUser) -> None:
        if self._gone:
            # It hung up while its name was being claimed.
            self.hub.leave(user)
            return
        self.user = user
        self._send(self.hub.users_line())

    def on_changenickname(self, rest: str) -> Deferred[None] | None:
        assert self.user is not None
        return self.hub.rename(self.user, self._one_argument("!changenickname NEW", rest))

    def on_users(self, rest: str) -> Deferred[None] | None:
        line = self.hub.current_users_line()
        if isinstance(line, bytes):
            self._send(line)
            return None
        return line.addCallback(self._send)

    def on_sendmsg(self, rest: str) -> Deferred[None] | None:
        assert self.user is not None
        text = check_text(rest.strip(), self.hub.limits)
        if not self.lag.may_broadcast():
            raise Later()
        return self.hub.say_all(self.user, text)

    def on_sendto(self, rest: str) -> Deferred[None] | None:
        assert self.user is not None
        parts = rest.split(None, 1)
        if not parts:
            raise BadArguments("usage: !sendto NAME TEXT")
        text = check_text(parts[1].strip() if len(parts) > 1 else "", self.hub.limits)
        return self.hub.say_to(self.user, parts[0], text)

    def on_poke(self, rest: str) -> Deferred[None] | None:
        assert self.user is not None
        return self.hub.poke(self.user, self._one_argument("!poke NAME", rest))

    def on_help(self, rest: str) -> None:
        self._send(linewire.HELP_LINES)

    def on_quit(self, rest: str) -> None:
        left = self._leave()
        self.transport.ending(tally.QUIT)
        if left is None:
            self._close()
            return
        # With several nodes the close says the name is free everywhere: it
        # waits for the commit (or close_grace, if the database is away).
        self.paused = True
        late = self.clock.callLater(self.hub.limits.close_grace, self._close)

        def stored(result: object) -> None:
            cancelled(late)
            self._close()

        left.addBoth(stored)

    # Helpers

    def _one_argument(self, usage: str, rest: str) -> str:
        args = rest.split()
        if len(args) != 1:
            raise BadArguments(f"usage: {usage}")
        return args[0]

    def _leave(self) -> Deferred[None] | None:
        """Give up the name; with several nodes, a Deferred that fires once that is stored."""
        user, self.user = self.user, None
        return None if user is None else self.hub.leave(user)

    def _failed(self, reason: Failure) -> None:
        """A command refused once the database had its say."""
        if self._gone or self.transport.disconnecting:
            return
        if reason.check(ChatError):
            self._error(reason.value.code, str(reason.value))
        elif reason.check(StoreFailed):
            self._error("storage-failed", "the chat's database is unreachable; try again later")
        else:
            self.log.failure("command failed", reason)

    def _error(self, code: str, text: str, close: str | None = None) -> None:
        """Send an error line; with C{close}, a reason, then close the connection."""
        self._send(linewire.error(code, text))
        if close is not None:
            self.transport.ending(close)
            self._close()
