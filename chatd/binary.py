"""The ASVT-chat binary protocol: a thin translator between frames and the hub."""

from __future__ import annotations

from collections import deque
from typing import NamedTuple, Union

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from chatd import binwire, tally
from chatd.binwire import PREFIX_LENGTH as PREFIX
from chatd.delivery import HubSession
from chatd.flood import FakeLag, HostBudgets, Later
from chatd.hub import Hub
from chatd.names import BinaryUser
from chatd.rules import (
    BadName,
    ChatError,
    Ending,
    MailboxFull,
    MessageTooLong,
    NameTaken,
    NameTooLong,
    NoSuchUser,
    TooManyUsers,
    TooManyUsersFromHost,
    check_text,
)


class Command(NamedTuple):
    """How many argument frames follow a command's name, its handler's name,
    and its keys in the tally of commands, ok and failed."""

    arity: int
    handler: str
    ok: str
    error: str


def _command(name: str, arity: int) -> Command:
    key = tally.command_key
    return Command(arity, f"on_{name}", key("binary", name, "ok"), key("binary", name, "error"))


COMMANDS: dict[bytes, Command] = {
    name.encode(): _command(name, arity)
    for name, arity in [
        ("register", 1), ("users", 0), ("send", 2), ("sendall", 1), ("receive", 0), ("logout", 0),
    ]
}

_UNKNOWN = tally.command_key("binary", tally.UNKNOWN, "error")


# A reply's frames, and whether the connection closes after them.
_Answer = tuple[bytes, bool]


class _Refused(Exception):
    """A command failed in a way that ends the connection after one reply frame."""


class BinaryProtocol(HubSession, Protocol):
    """One ASVT-chat-protocol connection.

    The framing is that of Twisted's C{IntNStringReceiver} with a
    little-endian uint32 prefix, parsed in one loop per read: a command is
    handled once its argument frames are in, with no callback per frame,
    since the frames of a read are the hottest path of the server.
    """

    # Whether each reply is written on its own, as one WebSocket message is
    # (PROTOCOL.md section 6), rather than with the others of the turn: a
    # binary session is pushed nothing, so its replies keep their order.
    whole_replies = False

    log = Logger()
    protocol_name = "binary"

    def __init__(
        self, hub: Hub, host: str, clock: IReactorTime, hosts: HostBudgets | None = None
    ) -> None:
        self.hub = hub
        self.host = host
        self.user: BinaryUser | None = None
        self.MAX_LENGTH = hub.limits.max_frame_length
        # A client between commands is silent; past this it has gone.
        self.idle_timeout: float | None = hub.limits.idle_timeout
        # Bytes of frames not yet parsed, and the command whose arguments come.
        self._unprocessed = b""
        self._command: Command | None = None
        self._args: list[bytes] = []
        # While set, nothing more is parsed; what arrives is kept (FakeLag).
        self.paused = False
        self.lag = FakeLag(self, hub.limits, clock, hosts, host)
        self._batch = hub.batch()
        # A refusal is queued behind earlier replies: read no more commands.
        self._closing = False
        # Replies not yet written, in the order of their commands; each is
        # filled in when ready (a commit; several nodes' database).
        self._queue: deque[list[_Answer | None]] = deque()
        # A command the flood limit put off, run first once it lets it.
        self._later: tuple[Command, list[bytes]] | None = None

    # Framing

    def dataReceived(self, data: bytes) -> None:
        # After a refusal nothing more is read: an over-long frame stays in
        # the buffer and would otherwise be refused again with each segment.
        if self._closing or self.transport.disconnecting:
            return
        # The replies to every command of one read go out as one write.
        with self._batch:
            self._parse(self._unprocessed + data if self._unprocessed else data)
        self.lag.check(len(self._unprocessed))

    def _parse(self, buffer: bytes) -> None:
        """Run each whole command in C{buffer}; keep the rest for the next read."""
        offset, end = 0, len(buffer)
        transport = self.transport
        if self._later is not None and not self.paused:
            later, self._later = self._later, None
            self._run(*later)
        while not self.paused and not transport.disconnecting and end - offset >= PREFIX:
            (length,) = binwire.unpack_length(buffer, offset)
            if length > self.MAX_LENGTH:
                self._unprocessed = buffer[offset:]
                self.lengthLimitExceeded(length)
                return
            start = offset + PREFIX
            if end - start < length:
                break
            offset = start + length
            frame = buffer[start:offset]
            command = self._command
            if command is None:
                command = COMMANDS.get(frame)
                if command is None:
                    self.hub.tally.commands[_UNKNOWN] += 1
                    self._refuse(binwire.UNKNOWN_COMMAND, tally.UNKNOWN_COMMAND)
                    break
                if command.arity:
                    self._command = command
                    continue
                self._run(command, [])
            else:
                self._args.append(frame)
                if len(self._args) == command.arity:
                    args, self._command, self._args = self._args, None, []
                    self._run(command, args)
        self._unprocessed = buffer[offset:]

    def _run(self, command: Command, args: list[bytes]) -> None:
        """Run one command whose argument frames are all in.

        A handler returns False when its answer is a refusal that leaves the
        connection open.
        """
        self.lag.command()
        try:
            ok = getattr(self, command.handler)(*args) is not False
        except _Refused as e:
            self.hub.tally.commands[command.error] += 1
            self._refuse(str(e))
            return
        except Later:
            # Run again, and counted, once the hold is over.
            self._later = (command, args)
            return
        self.hub.tally.commands[command.ok if ok else command.error] += 1

    def lengthLimitExceeded(self, length: int) -> None:
        self._refuse(binwire.FRAME_TOO_LONG, tally.FRAME_TOO_LONG)

    def connectionLost(self, reason: Failure | None = None) -> None:
        # Going offline is not logging out: the name and mailbox stay.
        self.user = None
        self.lag.stop()

    def end(self, ending: Ending) -> None:
        """Close for a limit, with a frame that says which where the protocol has one."""
        text = binwire.CLOSING.get(ending)
        if text is not None:
            self._refuse(text, tally.ENDINGS[ending])
        elif self._start_closing(tally.ENDINGS[ending]):
            self._close()

    # Commands

    def on_register(self, raw: bytes) -> None:
        try:
            name = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise _Refused(binwire.CANT_DECODE_LOGIN)
        current = self._current()
        if current is not None and self.hub.find(name) is not current:
            raise _Refused(binwire.already_registered(current.name))
        try:
            registered = self.hub.register(name, self.host)
        except ChatError as e:
            raise _Refused(_register_refusal(e, name))
        # (Deferred's isinstance goes through ABCMeta: ask the cheap way.)
        if isinstance(registered, tuple):
            self._reply(self._registered(registered))
            return
        # What the client sends next waits until the name is decided.
        registered.addCallbacks(self._registered, self._register_refused, errbackArgs=(name,))
        self._reply(self.lag.hold_until(registered))

    def _registered(self, registered: tuple[BinaryUser, bool]) -> bytes:
        self.user, new = registered
        greet = binwire.hello if new else binwire.welcome_back
        return binwire.frames(greet(self.user.name))

    def _register_refused(self, reason: Failure, name: str) -> _Answer | Failure:
        if not isinstance(reason.value, ChatError):
            return reason
        text = _register_refusal(reason.value, name)
        self._start_closing(tally.REFUSED, text)
        return binwire.frames(text), True

    def on_users(self) -> None:
        names = self.hub.current_names()
        if isinstance(names, list):
            self._reply(_users_frames(names))
        else:
            self._reply(names.addCallback(_users_frames))

    def on_send(self, receiver: bytes, text: bytes) -> bool:
        user = self._require_user()
        checked = self._text(text)
        name = receiver.decode("utf-8", "replace")
        try:
            sent = self.hub.say_to(user, name, checked)
        except NoSuchUser:
            self._reply(binwire.frames(binwire.no_such_user(name)))
            return False
        except MailboxFull:
            self._reply(binwire.frames(binwire.mailbox_full(name)))
            return False
        if sent is None:
            self._reply(binwire.ADDED_FRAME)
        else:
            self._reply_added(sent, name)
        return True

    def on_sendall(self, text: bytes) -> bool:
        user = self._require_user()
        checked = self._text(text)
        if not self.lag.may_broadcast():
            raise Later()
        try:
            sent = self.hub.say_all(user, checked)
        except MailboxFull as e:
            self._reply(binwire.frames(binwire.mailboxes_full(e.names)))
            return False
        if sent is None:
            self._reply(binwire.ADDED_FRAME)
        else:
            self._reply_added(sent, None)
        return True

    def on_receive(self) -> None:
        mail = self.hub.take_mail(self._require_user())
        if isinstance(mail, list):
            self._reply(binwire.mail_frames(mail))
        else:
            self._reply(mail.addCallback(binwire.mail_frames))

    def on_logout(self) -> None:
        left = None
        if self.user is not None:
            # Only if it still holds the name: never another's on the same host.
            left = self.hub.leave(self.user)
        self.user = None
        reply = binwire.frames(binwire.LOGGED_OUT)
        self._reply(reply if left is None else left.addCallback(lambda _: reply))

    # Helpers

    def _current(self) -> BinaryUser | None:
        """This connection's user, if it still holds its name (no logout took it)."""
        return self.user if self.hub.is_current(self.user) else None

    def _require_user(self) -> BinaryUser:
        user = self._current()
        if user is None:
            raise _Refused(binwire.NOT_REGISTERED)
        return user

    def _text(self, raw: bytes) -> str:
        try:
            return check_text(raw.decode("utf-8"), self.hub.limits)
        except UnicodeDecodeError:
            raise _Refused(binwire.BAD_MESSAGE)
        except MessageTooLong:
            raise _Refused(binwire.too_long(self.hub.limits.max_message_length))
        except ChatError:
            raise _Refused(binwire.BAD_MESSAGE)

    def _reply_added(self, sent: Deferred[None], name: str | None) -> None:
        """Answer a send or sendall once stored: added, or who could not get it."""
        sent.addCallbacks(lambda _: binwire.ADDED_FRAME, _refused_delivery, errbackArgs=(name,))
        self._reply(sent)

    def _reply(self, data: bytes | Deferred[bytes | _Answer], close: bool = False) -> None:
        """Answer with C{data}, frames ready to send or to come, in the order of
        the commands, once every change so far is committed.

        Acknowledged means stored, and since the hub's commits fire in order,
        replies keep the order of their commands. With the in-memory store
        the answer is sent at once, in the hub's batch for this read.
        """
        if data.__class__ is bytes:
            if self.hub.settled() and not self._queue:
                # Nothing waits to be stored: no Deferred for the common case.
                self._write(data, close)
                return
            answer: Deferred[Union[bytes, _Answer]] = self.hub.committed().addCallback(
                lambda _: data
            )
        else:
            answer = data
        slot: list[_Answer | None] = [None]
        self._queue.append(slot)
        answer.addCallback(_with_close, close).addErrback(self._storeFailed).addCallback(
            self._ready, slot
        )

    def _ready(self, answer: _Answer, slot: list[_Answer | None]) -> None:
        slot[0] = answer
        queue = self._queue
        while queue and queue[0][0] is not None:
            data, close = queue.popleft()[0]  # type: ignore[misc]
            self._write(data, close)

    def _write(self, data: bytes, close: bool) -> None:
        if self.transport.disconnecting:
            return
        if self.whole_replies:
            self.deliver(data)
        else:
            self.hub.send(self, data)
        if close:
            self._close()

    def _storeFailed(self, reason: Failure) -> _Answer:
        """The changes this reply stands on are not stored: say so. The
        connection stays open (PROTOCOL.md section 4): the client may try
        again, and the store logs the failure once."""
        return binwire.frames(binwire.STORE_FAILED), False

    def _refuse(self, text: str, reason: str = tally.REFUSED) -> None:
        """Answer one frame, then close: the protocol's way to end a bad session."""
        if self._start_closing(reason, text):
            self._reply(binwire.frames(text), close=True)

    def _start_closing(self, reason: str, detail: str = "") -> bool:
        """Read and parse nothing more; whether this call is the first to close.

        @param reason: why, one of L{tally.REASONS}.
        """
        if self._closing:
            return False
        # Not even the rest of the read in hand (a flooder's read can hold
        # thousands of frames), nor what the flood limit holds back.
        self._closing = self.paused = True
        self.lag.stop()
        self.transport.ending(reason, detail)
        return True


def _users_frames(names: list[str]) -> bytes:
    return binwire.frames(str(len(names)), *names)


def _with_close(answer: bytes | _Answer, close: bool) -> _Answer:
    return answer if isinstance(answer, tuple) else (answer, close)


def _refused_delivery(reason: Failure, name: str | None) -> bytes | Failure:
    """The reply to a send (to C{name}) or sendall the database turned down."""
    if reason.check(NoSuchUser) and name is not None:
        return binwire.frames(binwire.no_such_user(name))
    if reason.check(MailboxFull):
        full = reason.value
        if name is not None:
            return binwire.frames(binwire.mailbox_full(name))
        return binwire.frames(binwire.mailboxes_full(full.names))
    return reason


def _register_refusal(error: ChatError, name: str) -> str:
    """The frame that refuses a register, for each way it can fail."""
    if isinstance(error, NameTooLong):
        return binwire.LOGIN_TOO_LONG
    if isinstance(error, BadName):
        return binwire.BAD_LOGIN
    if isinstance(error, NameTaken):
        return binwire.exists(name)
    if isinstance(error, TooManyUsersFromHost):
        return binwire.HOST_FULL
    if isinstance(error, TooManyUsers):
        return binwire.SERVER_FULL
    raise error
