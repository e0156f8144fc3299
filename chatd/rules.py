"""The rules both protocols share: limits, names and message texts."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

# C0, DEL and C1: the characters that drive a terminal rather than print.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
# A name may hold neither controls nor any white space (Unicode-aware \s).
_NOT_IN_NAME = re.compile(r"[\x00-\x1f\x7f-\x9f\s]")


@dataclass(frozen=True)
class Limits:
    """Every limit one server enforces; defaults are PROTOCOL.md's."""

    max_name_length: int = 8
    max_message_length: int = 60
    max_line_length: int = 1024
    line_flush: float = 0.3
    max_frame_length: int = 1024
    # Section 5: what one client may take of a server; README.limits.md says why.
    max_connections: int = 500
    max_connections_per_host: int = 32
    handshake_timeout: float = 30.0
    idle_timeout: float = 60.0
    command_rate: float = 20.0
    command_burst: int = 50
    max_input_backlog: int = 64 * 1024
    max_output_backlog: int = 1024 * 1024
    max_binary_users: int = 5000
    max_binary_users_per_host: int = 100
    mailbox_size: int = 100
    # Fair mail: no sender may take more than its share of another's mailbox,
    # and broadcasts (which reach every mailbox) draw on a budget that each
    # peer host keeps across its connections.
    mailbox_share: int = 10
    mailbox_host_share: int = 50
    broadcast_rate: float = 5.0
    broadcast_burst: int = 20
    close_grace: float = 2.0

    def whole_command(self) -> int:
        """The most bytes one command of either protocol can take on the wire."""
        return max(self.max_line_length + 2, 3 * (4 + self.max_frame_length))


class Ending(Enum):
    """Why chatd ends a connection for a limit; the value is the line error code."""

    SERVER_FULL = "server-full"
    TIMEOUT = "timeout"
    FLOOD = "flood"
    SERVER_SHUTDOWN = "server-shutdown"
    # Several nodes: this node lost contact with the database for too long.
    NODE_LOST = "node-lost"


class ChatError(Exception):
    """A request broke a rule; C{code} is the line protocol's error code."""

    code = "error"


class BadArguments(ChatError):
    code = "bad-arguments"


class BadName(ChatError):
    code = "bad-name"


class EmptyName(BadName):
    """The name has no characters."""


class NameTooLong(BadName):
    """The name is over the length limit."""


class NameTaken(ChatError):
    code = "name-taken"


class NoSuchUser(ChatError):
    code = "no-such-user"


class BadMessage(ChatError):
    code = "bad-message"


class MessageTooLong(ChatError):
    code = "message-too-long"


class TooManyUsers(ChatError):
    """The server holds as many registered binary users as it may."""

    code = "server-full"


class TooManyUsersFromHost(TooManyUsers):
    """The peer host holds as many registered binary users as it may."""


class MailboxFull(ChatError):
    """Mail could not be queued for C{names}; everyone else got it."""

    code = "mailbox-full"

    def __init__(self, names: list[str]) -> None:
        super().__init__("mailbox full, not delivered to: " + " ".join(names))
        self.names = names


def fold(name: str) -> str:
    """The key under which a name is unique: case does not tell users apart."""
    return name.casefold()


def check_name(name: str, limits: Limits) -> str:
    """Return C{name} if it is a valid user name, else raise a L{BadName}."""
    if not name:
        raise EmptyName("a name needs at least one character")
    if len(name) > limits.max_name_length:
        raise NameTooLong(
            f"a name has at most {limits.max_name_length} characters"
        )
    if _NOT_IN_NAME.search(name):
        raise BadName("a name may not hold white space or control characters")
    return name


def check_text(text: str, limits: Limits) -> str:
    """Return C{text} if it is a valid message text, else raise a L{ChatError}."""
    if not text:
        raise BadMessage("a message needs at least one character")
    if len(text) > limits.max_message_length:
        raise MessageTooLong(
            f"a message has at most {limits.max_message_length} characters"
        )
    if _CONTROL.search(text):
        raise BadMessage("a message may not hold control characters")
    return text
