"""The shared state of one server, in three parts: who holds which name
(L{chatd.names}), how a message reaches a user (L{chatd.delivery}), and where
mail is kept (L{chatd.mailboxes}).

Each part has an in-process implementation and a PostgreSQL one
(L{chatd.cluster}); C{makeService} picks a set, and the protocols talk to
the hub alone, unaware of which set it holds.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

from chatd.delivery import Delivery, HubSession, LocalDelivery, Session
from chatd.mailboxes import LocalMailboxes, Mailboxes
from chatd.names import BinaryUser, LineUser, LocalNames, Names, User
from chatd.rules import Limits
from chatd.store import Mail, Store
from chatd.tally import Tally

__all__ = ["BinaryUser", "Hub", "HubSession", "LineUser", "Session", "User"]


class Hub:
    """One namespace, one way to every user and one place for mail, shared
    by every connection.

    By default, the in-process set: L{LocalNames}, L{LocalDelivery} (holding
    output to the end of C{clock}'s turn, given one) and L{LocalMailboxes}
    journaled to C{store}. A command returns its result, or with the
    PostgreSQL set a Deferred that fires with it once committed.
    """

    # The parts' own methods, bound here: a protocol's call reaches the part
    # that answers it with no call in between (see the parts for each).
    find: Callable[[str], User | None]
    is_current: Callable[[User | None], bool]
    names: Callable[[], list[str]]
    users_line: Callable[[], bytes]
    current_names: Callable[[], Any]
    current_users_line: Callable[[], Any]
    join_line: Callable[[str, Session], Any]
    register: Callable[[str, str], Any]
    rename: Callable[[LineUser, str], Deferred[None] | None]
    leave: Callable[[User], Deferred[None] | None]
    say_all: Callable[[User, str], Deferred[None] | None]
    say_to: Callable[[User, str, str], Deferred[None] | None]
    poke: Callable[[User, str], Deferred[None] | None]
    batch: Callable[[], Any]
    send: Callable[[Session, bytes], None]
    flush: Callable[[], None]
    flush_to: Callable[[Session], None]
    take_mail: Callable[[BinaryUser], list[Mail] | Deferred[list[Mail]]]
    settled: Callable[[], bool]
    committed: Callable[[], Deferred[None]]

    __slots__ = (
        "limits", "clock", "tally", "namespace", "delivery", "mailboxes",
        "find", "is_current", "names", "users_line", "current_names",
        "current_users_line", "join_line", "register", "rename", "leave",
        "say_all", "say_to", "poke", "batch", "send", "flush", "flush_to",
        "take_mail", "settled", "committed",
    )

    def __init__(
        self,
        limits: Limits | None = None,
        store: Store | None = None,
        clock: IReactorTime | None = None,
        *,
        names: Names | None = None,
        delivery: Delivery | None = None,
        mailboxes: Mailboxes | None = None,
    ) -> None:
        self.limits = limits or Limits()
        self.clock = clock
        self.tally = Tally()
        self.namespace: Names = names or LocalNames()
        self.delivery: Delivery = delivery or LocalDelivery(clock)
        self.mailboxes: Mailboxes = mailboxes or LocalMailboxes(store)
        for part in (self.namespace, self.mailboxes, self.delivery):
            part.bind(self)
        for user in self.mailboxes.load():
            self.namespace.add(user)
        for attribute, commands in _COMMANDS.items():
            owner = getattr(self, attribute)
            for command in commands:
                setattr(self, command, getattr(owner, command))

    def census(self) -> tuple[int, int, int]:
        """How many line users, binary users, and messages in their mailboxes."""
        return (self.delivery.count(), *self.mailboxes.census())


_COMMANDS = {
    "namespace": [
        "find", "is_current", "names", "users_line", "current_names",
        "current_users_line", "join_line", "register", "rename", "leave",
    ],
    "delivery": ["say_all", "say_to", "poke", "batch", "send", "flush", "flush_to"],
    "mailboxes": ["take_mail", "settled", "committed"],
}
