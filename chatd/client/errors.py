"""What a binary-protocol server can refuse, as exceptions carrying its own words."""

from __future__ import annotations


class ChatdError(Exception):
    """A chatd server refused a command; C{str(error)} is the server's reply text.

    @cvar closes: whether the server closes the connection after this reply.
    """

    closes = True


class Disconnected(ChatdError):
    """The connection closed before the reply came, or before the command was sent."""


class ProtocolError(ChatdError):
    """The server sent something this library does not understand; it hung up."""


class NotRegistered(ChatdError):
    """C{send}, C{sendall} or C{receive} before C{register}."""


class BadName(ChatdError):
    """An empty or invalid name, or one that is not UTF-8."""


class NameTooLong(BadName):
    """A name over the server's length limit."""


class NameTaken(ChatdError):
    """Another user holds the name."""


class AlreadyRegistered(ChatdError):
    """This connection already holds another name."""


class NoSuchUser(ChatdError):
    """C{send} to a name nobody holds; the connection stays open."""

    closes = False


class BadMessage(ChatdError):
    """A text that is empty, not UTF-8, or holds a control character."""


class MessageTooLong(ChatdError):
    """A text over the server's length limit."""


class UnknownCommand(ChatdError):
    """The server does not know the command."""


class FrameTooLong(ChatdError):
    """A frame over the server's frame length limit."""
