"""Who holds which name: one namespace for the users of both protocols.

L{LocalNames} keeps it in this process. With several nodes,
L{chatd.cluster.PostgresNames} claims names in PostgreSQL and keeps a
replica of every node's users here, which the same code answers from.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Protocol

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from chatd import linewire
from chatd.rules import NameTaken, TooManyUsers, TooManyUsersFromHost, check_name, fold
from chatd.store import Mail

if TYPE_CHECKING:
    from chatd.delivery import Session
    from chatd.hub import Hub


class User:
    """A name in the shared namespace."""

    __slots__ = ("name", "present")

    def __init__(self, name: str) -> None:
        self.name = name
        # Whether it holds its name in a hub: only leaving takes it away.
        self.present = False


class LineUser(User):
    """A user of the line protocol: messages are pushed to its session."""

    __slots__ = ("session", "host")

    def __init__(self, name: str, session: Session, host: str = "local") -> None:
        super().__init__(name)
        self.session = session
        self.host = host


class BinaryUser(User):
    """A user of the binary protocol: messages wait in its mailbox for C{receive}.

    C{key} names the user where its mail is kept. C{shares} counts the mail
    waiting from each sender (by folded name), and C{told} holds the senders
    of broadcasts told this mailbox was full since it was last emptied; both
    are None while there is nothing to count, as is the case for most users.
    """

    __slots__ = ("host", "key", "mailbox", "shares", "told")

    def __init__(self, name: str, host: str, key: int = 0) -> None:
        super().__init__(name)
        self.host = host
        self.key = key
        # A list, not a deque: an empty deque takes 760 bytes, a list 56,
        # and mail is only ever appended and taken whole.
        self.mailbox: list[Mail] = []
        self.shares: dict[str, int] | None = None
        self.told: set[str] | None = None


class Names(Protocol):
    """Who holds which name: what the hub needs of it."""

    def bind(self, hub: Hub) -> None:
        """Work with C{hub}'s delivery and mailboxes from now on."""

    def find(self, name: str) -> User | None:
        """The user holding C{name} (any case), if any."""

    def is_current(self, user: User | None) -> bool:
        """Whether C{user} still holds its name (no logout took it away)."""

    def names(self) -> list[str]:
        """Every user's name, in the order users arrived."""

    def users_line(self) -> bytes:
        """The line protocol's C{!users} reply, encoded."""

    def current_names(self) -> list[str] | Deferred[list[str]]:
        """The C{users} reply's names as of now on every node."""

    def current_users_line(self) -> bytes | Deferred[bytes]:
        """The C{!users} reply as of now on every node."""

    def join_line(self, name: str, session: Session) -> LineUser | Deferred[LineUser]:
        """Add a line user, announcing it to the other line users."""

    def register(
        self, name: str, host: str
    ) -> tuple[BinaryUser, bool] | Deferred[tuple[BinaryUser, bool]]:
        """Register a binary user, or claim its name back from the same host;
        the user, and whether it is new."""

    def rename(self, user: LineUser, new: str) -> Deferred[None] | None:
        """Give a line user a new name, telling every line user."""

    def leave(self, user: User) -> Deferred[None] | None:
        """Remove a user and its mail, telling the line users it left."""

    def add(self, user: User) -> None:
        """Put C{user}, whose name is free, in the namespace."""


class LocalNames:
    """The namespace of this process."""

    log = Logger()

    def __init__(self) -> None:
        self._by_name: dict[str, User] = {}
        # An insertion-ordered set: users in order of arrival.
        self._order: dict[User, None] = {}
        # How many binary users there are, all told and by peer host.
        self._binary = 0
        self._hosts: Counter[str] = Counter()
        # The encoded names for users_line(); None once out of date. Users
        # kept from before a restart have theirs encoded once, when first
        # asked for, not once each.
        self._names: bytes | None = None

    def bind(self, hub: Hub) -> None:
        self.limits = hub.limits
        self.delivery = hub.delivery
        self.mailboxes = hub.mailboxes

    # Looking up

    def find(self, name: str) -> User | None:
        return self._by_name.get(fold(name))

    def is_current(self, user: User | None) -> bool:
        """Whether C{user} still holds its name (no logout took it away)."""
        return user is not None and user.present

    def names(self) -> list[str]:
        """Every user's name, in the order users arrived."""
        return [user.name for user in self._order]

    def users_line(self) -> bytes:
        """The line protocol's C{!users} reply, encoded.

        The names are kept encoded: an arrival appends its name, so a join,
        which answers the whole list, costs a copy of bytes rather than a
        walk over every user; a departure or rename has them rebuilt.
        """
        if self._names is None:
            self._names = linewire.encode_names(self.names())
        return linewire.users_line(len(self._order), self._names)

    def current_names(self) -> list[str]:
        """The C{users} reply's names as of now on every node: here, L{names}."""
        return self.names()

    def current_users_line(self) -> bytes:
        """The C{!users} reply as of now on every node: here, L{users_line}."""
        return self.users_line()

    # Joining and leaving

    def join_line(self, name: str, session: Session) -> LineUser:
        """Add a line user, announcing it to the other line users."""
        check_name(name, self.limits)
        self._claim(name, None)
        user = LineUser(name, session, getattr(session, "host", "local"))
        self.add(user)
        self.delivery.attach(session)
        self.delivery.announce(linewire.joined(name), session)
        self.log.info("line user {name} joined", name=name)
        return user

    def register(self, name: str, host: str) -> tuple[BinaryUser, bool]:
        """Register a binary user, or claim its name back from the same host.

        @return: the user, and whether it is new.
        @raise TooManyUsers: a new name is over a limit on registered users.
        """
        check_name(name, self.limits)
        holder = self.find(name)
        if isinstance(holder, BinaryUser) and holder.host == host:
            return holder, False
        self._claim(name, None)
        self._check_room(host)
        user = BinaryUser(name, host)
        self.mailboxes.add(user)
        self.add(user)
        self.delivery.announce(linewire.joined(name))
        self.log.info("binary user {name} registered from {host}", name=name, host=host)
        return user, True

    def rename(self, user: LineUser, new: str) -> None:
        """Give a line user a new name, telling every line user."""
        check_name(new, self.limits)
        self._claim(new, user)
        old = user.name
        self._rename(user, new)
        self.log.info("{old} is now {new}", old=old, new=new)

    def leave(self, user: User) -> None:
        """Remove a user and its mail, telling the line users it left."""
        if not self.is_current(user):
            return
        self._forget(user)
        if isinstance(user, LineUser):
            self.delivery.detach(user.session)
        elif isinstance(user, BinaryUser):
            self.mailboxes.remove(user)
        self.delivery.announce(linewire.left(user.name))
        self.log.info("{name} left", name=user.name)

    def add(self, user: User) -> None:
        self._by_name[fold(user.name)] = user
        user.present = True
        self._order[user] = None
        if self._names is not None:
            self._names = linewire.add_name(self._names, user.name)
        if isinstance(user, BinaryUser):
            self._binary += 1
            self._hosts[user.host] += 1

    # Internals

    def _claim(self, name: str, owner: User | None) -> None:
        holder = self.find(name)
        if holder is not None and holder is not owner:
            raise NameTaken(f"{holder.name} is taken")

    def _check_room(self, host: str) -> None:
        if self._binary >= self.limits.max_binary_users:
            raise TooManyUsers("the server holds all the users it may")
        if self._hosts[host] >= self.limits.max_binary_users_per_host:
            raise TooManyUsersFromHost(f"{host} holds all the users it may")

    def _rename(self, user: User, new: str) -> None:
        old = user.name
        if self._by_name.get(fold(old)) is user:
            del self._by_name[fold(old)]
        user.name = new
        self._by_name[fold(new)] = user
        self._names = None
        self.delivery.announce(linewire.renamed(old, new))

    def _forget(self, user: User) -> None:
        """Take C{user} out of the namespace: it holds its name no more."""
        if self._by_name.get(fold(user.name)) is user:
            del self._by_name[fold(user.name)]
        del self._order[user]
        user.present = False
        self._names = None
        if isinstance(user, BinaryUser):
            self._binary -= 1
            self._hosts[user.host] -= 1
            if not self._hosts[user.host]:
                del self._hosts[user.host]
