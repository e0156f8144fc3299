"""The binary protocol's commands and their replies, without any I/O.

A L{Command} is the bytes to send and a reader: a generator that is sent the
reply's frames one at a time and returns the parsed reply, or raises the
L{ChatdError} the reply carries. The Twisted and the blocking client both
drive the same readers, so the wire format lives here alone, built on the
server's own reply texts in L{chatd.binwire}.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Generator, Generic, NamedTuple, TypeVar, Union

from chatd import binwire
from chatd.client import errors

T = TypeVar("T")
Reader = Generator[None, bytes, T]
# What a command argument may be: text is sent as UTF-8, bytes as they are.
Text = Union[str, bytes]

# Replies are small; a larger frame means the stream is not a chatd's.
MAX_FRAME_LENGTH = 1 << 20


class Message(NamedTuple):
    """One message taken from the mailbox by C{receive}."""

    sender: str
    text: str


@dataclass(frozen=True)
class Command(Generic[T]):
    """One command on the wire, and how to read its reply."""

    data: bytes
    read: Callable[[], Reader[T]]

    def reader(self) -> Reader[T]:
        """A fresh reader, ready to be sent the reply's first frame."""
        reader = self.read()
        next(reader)
        return reader


@dataclass(frozen=True)
class Done(Generic[T]):
    """A reader's parsed reply."""

    value: T


def feed(reader: Reader[T], frame: bytes) -> Done[T] | None:
    """Send one frame to C{reader}: the parsed reply once it is complete, else None.

    @raise ChatdError: the reply is an error.
    """
    try:
        reader.send(frame)
    except StopIteration as done:
        return Done(done.value)
    return None


# Matching the server's reply texts


def _pattern(template: Callable[[str], str]) -> re.Pattern[str]:
    """A pattern for a reply text with one filled-in value, made from the server's own."""
    before, after = template("\0").split("\0")
    return re.compile(re.escape(before) + "(.*)" + re.escape(after), re.DOTALL)


_EXACT_ERRORS: dict[str, type[errors.ChatdError]] = {
    binwire.NOT_REGISTERED: errors.NotRegistered,
    binwire.CANT_DECODE_LOGIN: errors.BadName,
    binwire.BAD_LOGIN: errors.BadName,
    binwire.LOGIN_TOO_LONG: errors.NameTooLong,
    binwire.BAD_MESSAGE: errors.BadMessage,
    binwire.UNKNOWN_COMMAND: errors.UnknownCommand,
    binwire.FRAME_TOO_LONG: errors.FrameTooLong,
}
_PATTERN_ERRORS: list[tuple[re.Pattern[str], type[errors.ChatdError]]] = [
    (_pattern(binwire.exists), errors.NameTaken),
    (_pattern(binwire.too_long), errors.MessageTooLong),  # type: ignore[arg-type]
    (_pattern(binwire.already_registered), errors.AlreadyRegistered),
    (_pattern(binwire.no_such_user), errors.NoSuchUser),
]
_GREETINGS = [_pattern(binwire.hello), _pattern(binwire.welcome_back)]


def error_for(text: str) -> errors.ChatdError | None:
    """The error a reply text stands for, or None if it is no error."""
    kind = _EXACT_ERRORS.get(text)
    if kind is None:
        kind = next((k for p, k in _PATTERN_ERRORS if p.fullmatch(text)), None)
    return None if kind is None else kind(text)


def _decode(frame: bytes) -> str:
    return frame.decode("utf-8", "replace")


def _first(frame: bytes) -> str:
    """A reply's first frame as text; raise the error it carries, if any."""
    text = _decode(frame)
    error = error_for(text)
    if error is not None:
        raise error
    return text


def _count(frame: bytes) -> int:
    text = _first(frame)
    if not text.isascii() or not text.isdigit():
        raise errors.ProtocolError(f"expected a count, got {text!r}")
    return int(text)


# Readers


def _greeting() -> Reader[str]:
    text = _first((yield))
    if not any(p.fullmatch(text) for p in _GREETINGS):
        raise errors.ProtocolError(f"expected a greeting, got {text!r}")
    return text


def _expect(expected: str) -> Callable[[], Reader[None]]:
    def read() -> Reader[None]:
        text = _first((yield))
        if text != expected:
            raise errors.ProtocolError(f"expected {expected!r}, got {text!r}")

    return read


def _names() -> Reader[list[str]]:
    names = []
    for _ in range(_count((yield))):
        names.append(_decode((yield)))
    return names


def _mail() -> Reader[list[Message]]:
    mail = []
    for _ in range(_count((yield))):
        sender = _decode((yield))
        mail.append(Message(sender, _decode((yield))))
    return mail


# Commands


def _encode(*parts: Text) -> bytes:
    return b"".join(
        binwire.frame(part.encode("utf-8") if isinstance(part, str) else part) for part in parts
    )


def register(name: Text) -> Command[str]:
    """Take a name; the reply is the server's greeting (C{Hello, NAME})."""
    return Command(_encode("register", name), _greeting)


def users() -> Command[list[str]]:
    """Every user's name, in the order they arrived."""
    return Command(_encode("users"), _names)


def send(receiver: Text, text: Text) -> Command[None]:
    """Send C{text} to the user C{receiver} alone."""
    return Command(_encode("send", receiver, text), _expect(binwire.ADDED))


def sendall(text: Text) -> Command[None]:
    """Send C{text} to every other user."""
    return Command(_encode("sendall", text), _expect(binwire.ADDED))


def receive() -> Command[list[Message]]:
    """Take every queued message, oldest first."""
    return Command(_encode("receive"), _mail)


def logout() -> Command[None]:
    """Give up the name and its mailbox."""
    return Command(_encode("logout"), _expect(binwire.LOGGED_OUT))


def raw(*parts: Text) -> Command[str]:
    """Any frames, for commands this module does not name; the reply is one frame."""

    def read() -> Reader[str]:
        return _first((yield))

    return Command(_encode(*parts), read)
