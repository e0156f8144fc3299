"""The binary protocol's wire format: frames and the reference server's reply texts."""

from __future__ import annotations

import struct
from typing import Iterable

from chatd.rules import Ending
from chatd.store import Mail

_LENGTH = struct.Struct("<I")

# Reply texts are byte for byte the reference server's: its clients compare them.
ADDED = "Message added to storage!"
LOGGED_OUT = "U've been successfully logouted"
NOT_REGISTERED = "U aren't registered!"
CANT_DECODE_LOGIN = "Can't decode login!"
BAD_LOGIN = "Bad login!"
LOGIN_TOO_LONG = "Login is too long!"
BAD_MESSAGE = "Bad message!"
UNKNOWN_COMMAND = "Unknown command!"
FRAME_TOO_LONG = "Frame is too long!"
SERVER_FULL = "Server is full!"
HOST_FULL = "Too many users from your host!"
FLOOD = "Too many commands!"

# The frame that ends a connection for a limit. The protocol has no
# unsolicited frames, so a client between commands (timed out, or at
# shutdown) is closed without one: its next read is a clean EOF rather than
# a stray frame taken for the answer to its next command.
CLOSING: dict[Ending, str] = {
    Ending.SERVER_FULL: SERVER_FULL,
    Ending.FLOOD: FLOOD,
}

# chatd's own: a change could not be committed, so it was not acknowledged.
STORE_FAILED = "Storage failed! Try again later."


def hello(name: str) -> str:
    return f"Hello, {name}"


def welcome_back(name: str) -> str:
    return f"Nice to see you, {name}"


def exists(name: str) -> str:
    return f"'{name}' already exists!"


def no_such_user(name: str) -> str:
    return f"User '{name}' doesn't exist!"


def too_long(limit: int) -> str:
    return f"Massage is too long! Max length = {limit}!"


def already_registered(name: str) -> str:
    return f"Already registered as '{name}'!"


def mailbox_full(name: str) -> str:
    return f"Mailbox of '{name}' is full!"


def mailboxes_full(names: list[str]) -> str:
    """The answer to a sendall that some full mailboxes did not take."""
    listed = ", ".join(f"'{name}'" for name in names)
    return f"Message added to storage, but mailboxes of {listed} are full!"


def frame(payload: bytes) -> bytes:
    return _LENGTH.pack(len(payload)) + payload


def frames(*texts: str) -> bytes:
    """Several text frames as one buffer, so a reply is one write."""
    return b"".join([frame(text.encode("utf-8")) for text in texts])


def mail_frames(mail: Iterable[Mail]) -> bytes:
    """The answer to C{receive}: the count, then each message's sender and text."""
    # The count goes first, and is known once the messages are framed: one
    # pass over the mailbox, whatever kind of iterable it is.
    parts = [b""]
    for _, sender, text in mail:
        parts += (frame(sender.encode("utf-8")), frame(text.encode("utf-8")))
    parts[0] = frame(str(len(parts) // 2).encode("ascii"))
    return b"".join(parts)


# The commonest reply, framed once.
ADDED_FRAME = frames(ADDED)

PREFIX_LENGTH = _LENGTH.size


# unpack_length(buffer, offset) -> (length,): the payload length that the
# prefix at C{offset} of C{buffer} announces.
unpack_length = _LENGTH.unpack_from


def length(prefix: bytes) -> int:
    """The payload length that a frame's C{PREFIX_LENGTH}-byte prefix announces."""
    (n,) = _LENGTH.unpack(prefix)
    return int(n)
