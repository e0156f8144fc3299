"""The line protocol's wire format: every line the server sends, encoded once."""

from __future__ import annotations

from typing import Iterable

from chatd.rules import Ending

HELP: tuple[tuple[str, str], ...] = (
    ("!nick", "NAME: choose your name; the first command"),
    ("!changenickname", "NEW: change your name"),
    ("!users", "list the users of both protocols"),
    ("!sendmsg", "TEXT: send TEXT to everyone"),
    ("!sendto", "NAME TEXT: send TEXT to NAME alone"),
    ("!poke", "NAME: poke a user, for everyone to see"),
    ("!help", "list the commands"),
    ("!quit", "leave the chat"),
)

# The human text after each limit's code in the error that ends a connection.
CLOSING: dict[Ending, str] = {
    Ending.SERVER_FULL: "the server is full; try again later",
    Ending.TIMEOUT: "no !nick in time",
    Ending.FLOOD: "too many commands; slow down",
    Ending.SERVER_SHUTDOWN: "the server is shutting down",
    Ending.NODE_LOST: "this node lost contact with the chat's database; connect again",
}


def encode(line: str) -> bytes:
    """One line as sent: UTF-8, ended by LF."""
    return (line + "\n").encode("utf-8")


def users_line(count: int, encoded: bytes) -> bytes:
    """C{!users N name1 ... nameN}, from N and the names' L{encode_names}."""
    return b"!users %d%s%s\n" % (count, b" " if encoded else b"", encoded)


def encode_names(names: Iterable[str]) -> bytes:
    """The names as C{!users} lists them, encoded."""
    return " ".join(names).encode("utf-8")


def add_name(encoded: bytes, name: str) -> bytes:
    """L{encode_names} of the same names and C{name} after them."""
    added = name.encode("utf-8")
    return encoded + b" " + added if encoded else added


def joined(name: str) -> bytes:
    return encode(f"!joined {name}")


def left(name: str) -> bytes:
    return encode(f"!left {name}")


def renamed(old: str, new: str) -> bytes:
    return encode(f"!changenickname {old} {new}")


def msg(sender: str, text: str) -> bytes:
    return encode(f"!msg {sender} {text}")


def privmsg(sender: str, text: str) -> bytes:
    return encode(f"!privmsg {sender} {text}")


def poke(poker: str, poked: str) -> str:
    """The poke line without its end: binary users get it as a mail text."""
    return f"!poke {poker} {poked}"


def error(code: str, text: str) -> bytes:
    return encode(f"!error {code} {text}")


# The same for everyone who asks: encoded once.
HELP_LINES = b"".join(encode(f"!help {name} {text}") for name, text in HELP)
