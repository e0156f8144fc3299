"""How the chat screen shows things: server lines and its own notes as styled text."""

from __future__ import annotations

import re
import time
import zlib
from typing import Callable

from prompt_toolkit.formatted_text import FormattedText
from prompt_toolkit.styles import Style

from chatd.client.line import ServerLine
from chatd.rules import fold

STYLE = Style.from_dict(
    {
        "time": "#888888",
        "info": "#888888",
        "error": "#ff5555 bold",
        "private": "#ff55ff",
        "poke": "#ffaa00 bold",
        "mention": "bold",
        "me": "bold",
        "bottom-toolbar": "noreverse bg:#303030 #bbbbbb",
    }
)
# Nicks keep one colour each, the same in every run.
_NICK_COLOURS = ("#5fafff", "#5fd75f", "#d7af5f", "#af87ff", "#5fd7d7", "#ff875f")
# A server that is not chatd might pass on terminal escapes; never print them.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")

Fragments = list[tuple[str, str]]


def clean(text: str) -> str:
    """C{text} with every control character shown as U+FFFD."""
    return _CONTROL.sub("\ufffd", text)


def nick(name: str, me: str | None = None) -> tuple[str, str]:
    """A nick in its own colour; the user's own is bold too."""
    colour = _NICK_COLOURS[zlib.crc32(fold(name).encode("utf-8")) % len(_NICK_COLOURS)]
    bold = " class:me" if me is not None and fold(name) == fold(me) else ""
    return (colour + bold, clean(name))


def stamped(fragments: Fragments, now: Callable[[], float] = time.time) -> FormattedText:
    """A line of the screen: the time of day, then C{fragments}."""
    clock = time.strftime("%H:%M", time.localtime(now()))
    return FormattedText([("class:time", clock + " "), *fragments])


def info(text: str) -> Fragments:
    return [("class:info", "-- " + clean(text))]


def error(text: str) -> Fragments:
    return [("class:error", "!! " + clean(text))]


def said(sender: str, text: str, me: str | None) -> Fragments:
    """A message to everyone; one that names the user stands out."""
    mentioned = me is not None and fold(me) in fold(text) and fold(sender) != fold(me)
    return [
        ("", "<"),
        nick(sender, me),
        ("", "> "),
        ("class:mention" if mentioned else "", clean(text)),
    ]


def whispered(sender: str, text: str, me: str | None) -> Fragments:
    return [("class:private", "*"), nick(sender, me), ("class:private", "* " + clean(text))]


def whispered_to(receiver: str, text: str, me: str | None) -> Fragments:
    """The user's own private message, as its sender sees it."""
    return [("class:private", "-> *"), nick(receiver, me), ("class:private", "* " + clean(text))]


def server_line(line: ServerLine, me: str | None) -> Fragments:
    """One line from the server, readable."""
    kind, args = line
    if kind == "msg":
        return said(args[0], args[1], me)
    if kind == "privmsg":
        return whispered(args[0], args[1], me)
    if kind == "poke":
        return _poke(args[0], args[1], me)
    if kind == "joined":
        return [("class:info", "--> "), nick(args[0], me), ("class:info", " joined")]
    if kind == "left":
        return [("class:info", "<-- "), nick(args[0], me), ("class:info", " left")]
    if kind == "changenickname":
        return _renamed(args[0], args[1], me)
    if kind == "users":
        return _users(args, me)
    if kind == "error":
        return error(args[1])
    if kind == "help":
        return info(f"{args[0]} {args[1]}")
    return [("class:info", clean(args[0]))]


def _poke(poker: str, poked: str, me: str | None) -> Fragments:
    target = (
        ("class:poke", "you") if me is not None and fold(poked) == fold(me) else nick(poked, me)
    )
    return [
        ("class:poke", "* "),
        nick(poker, me),
        ("class:poke", " pokes "),
        target,
        ("class:poke", "!"),
    ]


def _renamed(old: str, new: str, me: str | None) -> Fragments:
    # The client has already taken the new nick when it shows the line.
    if me is not None and fold(new) == fold(me):
        return [("class:info", "-- you are now known as "), nick(new, me)]
    return [
        ("class:info", "-- "),
        nick(old, me),
        ("class:info", " is now known as "),
        nick(new, me),
    ]


def _users(names: list[str], me: str | None) -> Fragments:
    fragments: Fragments = [("class:info", f"-- {len(names)} online: ")]
    for i, name in enumerate(names):
        if i:
            fragments.append(("class:info", ", "))
        fragments.append(nick(name, me))
    return fragments
