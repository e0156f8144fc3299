"""Clients for chatd: a library for the binary protocol, and a terminal chat client.

The library speaks ASVT-chat's binary protocol (PROTOCOL.md section 4)::

    from chatd.client import BlockingClient

    with BlockingClient("localhost", 31337) as chat:
        chat.register("alice")
        chat.sendall("hello, everyone")
        for sender, text in chat.receive():
            print(f"{sender}: {text}")
        chat.logout()

L{connect} gives the same commands as Deferreds, for Twisted programs.
Refusals raise a L{ChatdError} whose message is the server's reply.

The terminal client, C{chatd-client} or C{python -m chatd.client}, speaks
PyChat's line protocol; it lives in L{chatd.client.terminal}.
"""

from chatd.client.binary import DEFAULT_PORT, BinaryClientProtocol, connect
from chatd.client.blocking import BlockingClient
from chatd.client.commands import Message
from chatd.client.errors import (
    AlreadyRegistered,
    BadMessage,
    BadName,
    ChatdError,
    Disconnected,
    FrameTooLong,
    MessageTooLong,
    NameTaken,
    NameTooLong,
    NoSuchUser,
    NotRegistered,
    ProtocolError,
    UnknownCommand,
)

__all__ = [
    "DEFAULT_PORT",
    "AlreadyRegistered",
    "BadMessage",
    "BadName",
    "BinaryClientProtocol",
    "BlockingClient",
    "ChatdError",
    "Disconnected",
    "FrameTooLong",
    "Message",
    "MessageTooLong",
    "NameTaken",
    "NameTooLong",
    "NoSuchUser",
    "NotRegistered",
    "ProtocolError",
    "UnknownCommand",
    "connect",
]
