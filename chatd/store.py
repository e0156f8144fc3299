"""Where the binary users and their mail are kept beyond the hub's memory.

The hub holds every user and mailbox in memory and answers from there. A store
is its journal: the hub tells it every change to the binary users and their
mail, in order, and asks it when all changes so far are committed. A binary
client is acknowledged only then, so acknowledged means stored.
"""

from __future__ import annotations

from itertools import count
from typing import NamedTuple, Protocol

from twisted.internet.defer import Deferred, succeed


class KeptUser(NamedTuple):
    """A binary user as a store kept it: registered, with its mail oldest first."""

    key: int
    name: str
    host: str
    mail: list[tuple[str, str]]


class Store(Protocol):
    """The journal of the binary users and their mail."""

    def load(self) -> list[KeptUser]:
        """The users kept from before, in the order they arrived.

        Called once, before any change.
        """

    def add_user(self, name: str, host: str) -> int:
        """Keep a newly registered user; return the key that names it from now on."""

    def remove_user(self, key: int) -> None:
        """Forget a user and its mail, as one change."""

    def add_mail(self, key: int, sender: str, text: str) -> None:
        """Put a message at the end of a user's mailbox."""

    def clear_mail(self, key: int) -> None:
        """Empty a user's mailbox: its mail has been received."""

    def committed(self) -> Deferred[None]:
        """A new Deferred that fires once every change so far is committed.

        Deferreds fire in the order they were asked for, so replies waiting
        on them keep their order; one fails if its changes could not be
        committed.
        """


class MemoryStore:
    """Keeps nothing beyond the hub's memory: every change is committed at once."""

    def __init__(self) -> None:
        self._keys = count(1)

    def load(self) -> list[KeptUser]:
        return []

    def add_user(self, name: str, host: str) -> int:
        return next(self._keys)

    def remove_user(self, key: int) -> None:
        pass

    def add_mail(self, key: int, sender: str, text: str) -> None:
        pass

    def clear_mail(self, key: int) -> None:
        pass

    def committed(self) -> Deferred[None]:
        return succeed(None)
