"""The ASVT-chat binary protocol: a thin translator between frames and the hub."""

from __future__ import annotations

from typing import NamedTuple

from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from chatd import binwire
from chatd.binwire import PREFIX_LENGTH as PREFIX
from chatd.flood import FakeLag, HostBudgets, Later
from chatd.hub import BinaryUser, Hub
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
    """How many argument frames follow a command's name, and its handler's name."""

    arity: int
    handler: str


COMMANDS: dict[bytes, Command] = {
    b"register": Command(1, "on_register"),
    b"users": Command(0, "on_users"),
    b"send": Command(2, "on_send"),
    b"sendall": Command(1, "on_sendall"),
    b"receive": Command(0, "on_receive"),
    b"logout": Command(0, "on_logout"),
}


class _Refused(Exception):
    """A command failed in a way that ends the connection after one reply frame."""


class BinaryProtocol(Protocol):
    """One ASVT-chat-protocol connection.

    The framing is that of Twisted's C{IntNStringReceiver} with a
    little-endian uint32 prefix, parsed in one loop per read: a command is
    handled once its argument frames are in, with no callback per frame,
    since the frames of a read are the hottest path of the server.
    """

    log = Logger()

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
                    self._refuse(binwire.UNKNOWN_COMMAND)
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
        """Run one command whose argument frames are all in."""
        self.lag.command()
        try:
            getattr(self, command.handler)(*args)
        except _Refused as e:
            self._refuse(str(e))
        except Later:
            self._later = (command, args)

    def lengthLimitExceeded(self, length: int) -> None:
        self._refuse(binwire.FRAME_TOO_LONG)

    def connectionLost(self, reason: Failure | None = None) -> None:
        # Going offline is not logging out: the name and mailbox stay.
        self.user = None
        self.lag.stop()

    def end(self, ending: Ending) -> None:
        """Close for a limit, with a frame that says which where the protocol has one."""
        text = binwire.CLOSING.get(ending)
        if text is not None:
            self._refuse(text)
        elif self._start_closing(ending.value):
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
            self.user, new = self.hub.register(name, self.host)
        except NameTooLong:
            raise _Refused(binwire.LOGIN_TOO_LONG)
        except BadName:
            raise _Refused(binwire.BAD_LOGIN)
        except NameTaken:
            raise _Refused(binwire.exists(name))
        except TooManyUsersFromHost:
            raise _Refused(binwire.HOST_FULL)
        except TooManyUsers:
            raise _Refused(binwire.SERVER_FULL)
        greet = binwire.hello if new else binwire.welcome_back
        self._reply(binwire.frames(greet(self.user.name)))

    def on_users(self) -> None:
        names = self.hub.names()
        self._reply(binwire.frames(str(len(names)), *names))

    def on_send(self, receiver: bytes, text: bytes) -> None:
        user = self._require_user()
        checked = self._text(text)
        name = receiver.decode("utf-8", "replace")
        try:
            self.hub.say_to(user, name, checked)
        except NoSuchUser:
            self._reply(binwire.frames(binwire.no_such_user(name)))
            return
        except MailboxFull:
            self._reply(binwire.frames(binwire.mailbox_full(name)))
            return
        self._reply(binwire.ADDED_FRAME)

    def on_sendall(self, text: bytes) -> None:
        user = self._require_user()
        checked = self._text(text)
        if not self.lag.may_broadcast():
            raise Later()
        try:
            self.hub.say_all(user, checked)
        except MailboxFull as e:
            self._reply(binwire.frames(binwire.mailboxes_full(e.names)))
            return
        self._reply(binwire.ADDED_FRAME)

    def on_receive(self) -> None:
        self._reply(binwire.mail_frames(self.hub.take_mail(self._require_user())))

    def on_logout(self) -> None:
        if self.user is not None:
            # Only if it still holds the name: never another's on the same host.
            self.hub.leave(self.user)
        self.user = None
        self._reply(binwire.frames(binwire.LOGGED_OUT))

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

    def _reply(self, data: bytes, close: bool = False) -> None:
        """Answer with C{data}, frames ready to send, once every change so far is committed.

        Acknowledged means stored, and since the hub's commits fire in order,
        replies keep the order of their commands. With the in-memory store
        the answer is sent at once, in the hub's batch for this read.
        """
        if self.hub.settled():
            # Nothing waits to be stored: no Deferred for the common case.
            self._write(None, data, close)
        else:
            self.hub.committed().addCallbacks(self._write, self._storeFailed, (data, close))

    def _write(self, _: None, data: bytes, close: bool) -> None:
        if self.transport.disconnecting:
            return
        self.hub.send(self, data)
        if close:
            self._close()

    def _storeFailed(self, reason: Failure) -> None:
        """The changes this reply stands on are not stored: say so, and close."""
        if self.transport.disconnecting:
            return
        self.log.error(
            "closing {peer}: {reason}", peer=self.transport.getPeer(), reason=reason.value
        )
        self._write(None, binwire.frames(binwire.STORE_FAILED), close=True)

    def _close(self) -> None:
        # What is held goes first: TLS drops what is written after the close.
        self.hub.flush_to(self)
        self.transport.loseConnection()

    def deliver(self, data: bytes) -> None:
        """Write to the client: every byte this connection sends passes here."""
        self.transport.write(data)

    def _refuse(self, text: str) -> None:
        """Answer one frame, then close: the protocol's way to end a bad session."""
        if self._start_closing(text):
            self._reply(binwire.frames(text), close=True)

    def _start_closing(self, reason: str) -> bool:
        """Read and parse nothing more; whether this call is the first to close."""
        if self._closing:
            return False
        # Not even the rest of the read in hand (a flooder's read can hold
        # thousands of frames), nor what the flood limit holds back.
        self._closing = self.paused = True
        self.lag.stop()
        self.log.info("closing {peer}: {reason}", peer=self.transport.getPeer(), reason=reason)
        return True
