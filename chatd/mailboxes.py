"""Where mail is kept: the binary users' mailboxes, and fair mail's shares of them.

L{LocalMailboxes} keeps them in this process's memory and journals every
change, in order, to a L{Store} (memory or SQLite), which says when it is
committed. With several nodes, L{chatd.cluster.PostgresMailboxes} keeps them
in PostgreSQL.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from chatd.names import BinaryUser, User
from chatd.rules import fold
from chatd.store import Mail, MemoryStore, Store

if TYPE_CHECKING:
    from chatd.hub import Hub

# What a peer host's count among a mailbox's shares is kept under.
_HOST = "\0"
# The most senders a mailbox remembers having told it is full.
_MOST_TOLD = 256


class Mailboxes(Protocol):
    """Where mail is kept: what the hub needs of it."""

    def bind(self, hub: Hub) -> None:
        """Work with C{hub}'s limits and tally from now on."""

    def load(self) -> list[BinaryUser]:
        """The binary users kept from before, with their mail, in order of arrival."""

    def add(self, user: BinaryUser) -> None:
        """Give a newly registered binary user its mailbox."""

    def remove(self, user: BinaryUser) -> None:
        """Take away a binary user's mailbox and its mail: the user left."""

    def take_mail(self, user: BinaryUser) -> list[Mail] | Deferred[list[Mail]]:
        """Every message queued for C{user}, oldest first; the mailbox is then empty."""

    def not_yet_told(self, full: list[BinaryUser], sender: str) -> list[str]:
        """The names among C{full} the sender of a broadcast was not yet told of."""

    def settled(self) -> bool:
        """Whether every change made so far is committed."""

    def committed(self) -> Deferred[None]:
        """Fire once every change made so far is committed."""

    def census(self) -> tuple[int, int]:
        """How many mailboxes, and messages in them."""


class LocalMailboxes:
    """The mailboxes of this process, journaled to a L{Store}."""

    def __init__(self, store: Store | None = None) -> None:
        self.store: Store = store or MemoryStore()
        # An insertion-ordered set: the binary users, who get mail.
        self._boxes: dict[BinaryUser, None] = {}

    def bind(self, hub: Hub) -> None:
        self.limits = hub.limits
        self.tally = hub.tally
        # Whether a sender's share of a mailbox is less than all of it, and
        # so worth counting.
        self._sharing = (
            min(self.limits.mailbox_share, self.limits.mailbox_host_share)
            < self.limits.mailbox_size
        )

    def load(self) -> list[BinaryUser]:
        users = []
        for kept in self.store.load():
            user = BinaryUser(kept.name, kept.host, kept.key)
            user.mailbox.extend(kept.mail)
            self._count_shares(user)
            self._boxes[user] = None
            users.append(user)
        return users

    def add(self, user: BinaryUser) -> None:
        user.key = self.store.add_user(user.name, user.host)
        self._boxes[user] = None

    def remove(self, user: BinaryUser) -> None:
        del self._boxes[user]
        self.store.remove_user(user.key)

    def settled(self) -> bool:
        """Whether every change made so far is committed to the store."""
        return self.store.settled()

    def committed(self) -> Deferred[None]:
        """Fire once every change made so far is committed to the store."""
        return self.store.committed()

    def census(self) -> tuple[int, int]:
        return len(self._boxes), sum(len(user.mailbox) for user in self._boxes)

    # Mail

    def post_all(self, sender: User, text: str) -> list[BinaryUser]:
        """Queue C{text} for every binary user but C{sender}; those without room."""
        name = sender.name
        host = getattr(sender, "host", None)
        post = self.post
        full = [
            user
            for user in self._boxes
            if user is not sender and not post(user, name, text, host)
        ]
        # Counted once a broadcast, not once a recipient: this is the hot path.
        tally = self.tally
        tally.mailed += len(self._boxes) - isinstance(sender, BinaryUser) - len(full)
        tally.mailbox_full += len(full)
        return full

    def post(
        self, receiver: BinaryUser, sender: str, text: str, host: str | None = None
    ) -> bool:
        """Queue mail for C{receiver}; whether its mailbox had room for it.

        There is room while the mailbox is not full, the sender has less
        than its share (C{mailbox_share}) of it, and the sender's peer
        C{host} less than its share (C{mailbox_host_share}), so that mail
        from everyone else still fits whatever one sender sends, under
        however many names.

        A full mailbox is not logged: the sender is told, and one broadcast
        could otherwise log a line for every full mailbox on the server.
        """
        if len(receiver.mailbox) >= self.limits.mailbox_size:
            return False
        if self._sharing:
            shares = receiver.shares
            if shares is None:
                shares = receiver.shares = {}
            folded = fold(sender)
            waiting = shares.get(folded, 0)
            if waiting >= self.limits.mailbox_share:
                return False
            if host is not None:
                # Apart from the names: no name holds a control character.
                from_host = shares.get(_HOST + host, 0)
                if from_host >= self.limits.mailbox_host_share:
                    return False
                shares[_HOST + host] = from_host + 1
            shares[folded] = waiting + 1
        key = self.store.add_mail(receiver.key, sender, text)
        receiver.mailbox.append(Mail(key, sender, text))
        return True

    def take_mail(self, user: BinaryUser) -> list[Mail]:
        """Every message queued for C{user}, oldest first; the mailbox is then empty."""
        mail, user.mailbox = user.mailbox, []
        user.shares = user.told = None
        if mail:
            self.store.remove_mail(user.key, mail[-1].key)
            # The client gets the mail only once its removal is committed;
            # if it cannot be, the mail was never received: put it back.
            if not self.store.settled():
                self.store.committed().addErrback(self._put_back, user, mail)
        return mail

    def not_yet_told(self, full: list[BinaryUser], sender: str) -> list[str]:
        return not_yet_told(full, sender)

    # Internals

    def _count_shares(self, user: BinaryUser) -> None:
        """Count C{user}'s waiting mail by sender anew, after it changed whole."""
        if not self._sharing or not user.mailbox:
            return
        shares = user.shares = {}
        for mail in user.mailbox:
            folded = fold(mail.sender)
            shares[folded] = shares.get(folded, 0) + 1

    def _put_back(self, reason: Failure, user: BinaryUser, mail: list[Mail]) -> None:
        if user.present:
            # Older than any mail that came since: back at the front.
            user.mailbox[:0] = mail
            self._count_shares(user)
            self.store.put_back_mail(user.key, mail)


def not_yet_told(full: list[BinaryUser], sender: str) -> list[str]:
    """The names among C{full} that the sender of a broadcast was not yet
    told of since they last took their mail; they count as told now.

    Without this, every broadcast would name the same abandoned users
    again. A mailbox remembers at most C{_MOST_TOLD} senders: past that
    it starts over, and some are told a second time.
    """
    news = []
    for user in full:
        told = user.told
        if told is None:
            told = user.told = set()
        elif sender in told:
            continue
        elif len(told) >= _MOST_TOLD:
            told.clear()
        told.add(sender)
        news.append(user.name)
    return news
