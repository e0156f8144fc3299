"""The shared state of one server: the users of both protocols and their mail."""

from __future__ import annotations

from types import TracebackType
from collections import Counter
from typing import Any, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from chatd import linewire
from chatd.rules import (
    Limits,
    MailboxFull,
    NameTaken,
    NoSuchUser,
    TooManyUsers,
    TooManyUsersFromHost,
    check_name,
    fold,
)
from chatd.store import Mail, MemoryStore, Store
from chatd.tally import Tally


class Session(Protocol):
    """What the hub needs of a connection it sends to."""

    def deliver(self, data: bytes) -> None:
        """Write C{data}, encoded lines or frames, to the client."""


class HubSession:
    """The L{Session} both protocols are: where their bytes are written, and
    how they close after what the hub holds for them."""

    hub: Hub
    transport: Any

    def deliver(self, data: bytes) -> None:
        """Write to the client: every byte this connection sends passes here."""
        self.transport.write(data)

    def _close(self) -> None:
        # What is held goes first: TLS drops what is written after the close.
        self.hub.flush_to(self)
        self.transport.loseConnection()


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

    C{key} names the user in the hub's L{Store}. C{shares} counts the mail
    waiting from each sender (by folded name), and C{told} holds the senders
    of broadcasts told this mailbox was full since it was last emptied; both
    are None while there is nothing to count, as is the case for most users.
    """

    __slots__ = ("host", "key", "mailbox", "shares", "told")

    def __init__(self, name: str, host: str, key: int) -> None:
        super().__init__(name)
        self.host = host
        self.key = key
        # A list, not a deque: an empty deque takes 760 bytes, a list 56,
        # and mail is only ever appended and taken whole.
        self.mailbox: list[Mail] = []
        self.shares: dict[str, int] | None = None
        self.told: set[str] | None = None


class Hub:
    """One namespace and one message store shared by every connection.

    The hub answers from memory; every change to the binary users and their
    mail also goes, in order, to C{store}, which says when it is committed.

    While a connection's read is handled (L{batch}), what the hub sends is
    held, and each session then gets it all in one write: the lines every
    line user gets alike are joined once and shared; a session that gets
    something else (a reply, a private message, or is left out of its own
    message) gets its own list. Given a C{clock} (the reactor), the hub holds
    on to the end of the reactor's turn, so that the reads of many clients
    handled in one turn (a burst of joins, several senders) still give each
    session one write.
    """

    log = Logger()

    def __init__(
        self,
        limits: Limits | None = None,
        store: Store | None = None,
        clock: IReactorTime | None = None,
    ) -> None:
        self.limits = limits or Limits()
        self.clock = clock
        self.store: Store = store or MemoryStore()
        self.tally = Tally()
        self._by_name: dict[str, User] = {}
        # Insertion-ordered sets: users in order of arrival; the sessions of
        # the line users among them, who are pushed announcements; and the
        # binary users, who get mail.
        self._order: dict[User, None] = {}
        self._line_sessions: dict[Session, None] = {}
        self._binary_users: dict[BinaryUser, None] = {}
        # How many of the binary users each peer host registered.
        self._hosts: Counter[str] = Counter()
        # The encoded names for users_line(); None once out of date.
        self._names: bytes | None = b""
        # Output held during a batch: what every line session gets, unless
        # it has its own list in _own; and what sessions that get no
        # announcements (binary ones, line ones without a name) get, in _apart.
        self._batch = _Batch(self)
        self._batches = 0
        self._common: list[bytes] = []
        self._own: dict[Session, list[bytes]] = {}
        self._apart: dict[Session, list[bytes]] = {}
        # Binary users kept from before a restart: registered, and offline.
        # Their names are encoded once, when first asked for, not once each.
        self._names = None
        # Whether a sender's share of a mailbox is less than all of it, and
        # so worth counting.
        self._sharing = (
            min(self.limits.mailbox_share, self.limits.mailbox_host_share)
            < self.limits.mailbox_size
        )
        for kept in self.store.load():
            user = BinaryUser(kept.name, kept.host, kept.key)
            user.mailbox.extend(kept.mail)
            self._count_shares(user)
            self._add(user)

    def settled(self) -> bool:
        """Whether every change made so far is committed to the store."""
        return self.store.settled()

    def committed(self) -> Deferred[None]:
        """Fire once every change made so far is committed to the store."""
        return self.store.committed()

    # Looking up

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

    def census(self) -> tuple[int, int, int]:
        """How many line users, binary users, and messages in their mailboxes."""
        mail = sum(len(user.mailbox) for user in self._binary_users)
        return len(self._line_sessions), len(self._binary_users), mail

    def find(self, name: str) -> User | None:
        return self._by_name.get(fold(name))

    def is_current(self, user: User | None) -> bool:
        """Whether C{user} still holds its name (no logout took it away)."""
        return user is not None and user.present

    # Joining and leaving

    def join_line(self, name: str, session: Session) -> LineUser:
        """Add a line user, announcing it to the other line users."""
        check_name(name, self.limits)
        self._claim(name, None)
        user = LineUser(name, session, getattr(session, "host", "local"))
        self._add(user)
        if self._batches:
            # It gets what is announced from now on, not what came before.
            self._own[session] = self._apart.pop(session, [])
        self._line_sessions[session] = None
        self._announce(linewire.joined(name), exclude=user)
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
        user = BinaryUser(name, host, self.store.add_user(name, host))
        self._add(user)
        self._announce(linewire.joined(name))
        self.log.info("binary user {name} registered from {host}", name=name, host=host)
        return user, True

    def rename(self, user: LineUser, new: str) -> None:
        """Give a line user a new name, telling every line user."""
        check_name(new, self.limits)
        self._claim(new, user)
        old = user.name
        del self._by_name[fold(old)]
        user.name = new
        self._by_name[fold(new)] = user
        self._names = None
        self._announce(linewire.renamed(old, new))
        self.log.info("{old} is now {new}", old=old, new=new)

    def leave(self, user: User) -> None:
        """Remove a user and its mail, telling the line users it left."""
        if not self.is_current(user):
            return
        del self._by_name[fold(user.name)]
        del self._order[user]
        user.present = False
        self._names = None
        if isinstance(user, LineUser):
            if self._batches:
                # It keeps what was announced before it left, and no more.
                self._apart[user.session] = self._own_list(user.session)
                del self._own[user.session]
            del self._line_sessions[user.session]
        elif isinstance(user, BinaryUser):
            del self._binary_users[user]
            self._hosts[user.host] -= 1
            if not self._hosts[user.host]:
                del self._hosts[user.host]
            self.store.remove_user(user.key)
        self._announce(linewire.left(user.name))
        self.log.info("{name} left", name=user.name)

    # Messages

    def say_all(self, sender: User, text: str) -> None:
        """Send C{text} from C{sender} to every other user of both protocols.

        @raise MailboxFull: naming the binary users whose mailbox had no room
            for it (full, or holding the sender's whole share) and who were
            not named to this sender since they last took their mail;
            everyone else got the message.
        """
        self._announce(linewire.msg(sender.name, text), exclude=sender)
        self.tally.pushed += len(self._line_sessions) - isinstance(sender, LineUser)
        name = sender.name
        host = getattr(sender, "host", None)
        full = [
            user
            for user in self._binary_users
            if user is not sender and not self._post(user, name, text, host)
        ]
        # Counted once a broadcast, not once a recipient: this is the hot path.
        tally = self.tally
        tally.mailed += len(self._binary_users) - isinstance(sender, BinaryUser) - len(full)
        tally.mailbox_full += len(full)
        if full:
            news = self._not_yet_told(full, fold(name))
            if news:
                raise MailboxFull(news)

    def say_to(self, sender: User, receiver: str, text: str) -> None:
        """Send C{text} from C{sender} to the user named C{receiver} alone."""
        self._deliver(sender, self._lookup(receiver), text)

    def poke(self, poker: User, poked: str) -> None:
        """Show every line user that C{poker} poked C{poked}; a binary user gets mail.

        @raise MailboxFull: the poke was shown, but a binary user's mailbox was full.
        """
        target = self._lookup(poked)
        line = linewire.poke(poker.name, target.name)
        self._announce(linewire.encode(line))
        self.tally.pushed += len(self._line_sessions)
        if isinstance(target, BinaryUser):
            self._mail_one(target, poker.name, line, getattr(poker, "host", None))

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

    # Sending

    def batch(self) -> _Batch:
        """Hold what is sent in a C{with} block, then write it: one write a session.

        A protocol wraps the handling of one read in this, so that a read
        with many commands gives each session one write, not one a line.
        """
        return self._batch

    def send(self, session: Session, data: bytes) -> None:
        """Send C{data} to one session, in order with what the hub pushes it."""
        if self._batches:
            self._own_list(session).append(data)
        else:
            session.deliver(data)

    def flush(self) -> None:
        """Write everything held, one write a session."""
        common, own, apart = self._common, self._own, self._apart
        if not common and not own and not apart:
            return
        self._common, self._own, self._apart = [], {}, {}
        if common:
            data = b"".join(common)
            for session in list(self._line_sessions):
                if session not in own:
                    session.deliver(data)
        for held in (own, apart):
            for session, chunks in held.items():
                if chunks:
                    session.deliver(b"".join(chunks))

    def flush_to(self, session: Session) -> None:
        """Write what is held for C{session} now: a protocol does so before it
        closes the connection, since a TLS transport drops what is written
        after C{loseConnection}."""
        if not self._batches:
            return
        if session in self._line_sessions:
            chunks = self._own_list(session)
            # An empty list of its own: it has had the common lines so far.
            self._own[session] = []
        else:
            chunks = self._apart.pop(session, [])
        if chunks:
            session.deliver(b"".join(chunks))

    # Internals

    def _claim(self, name: str, owner: User | None) -> None:
        holder = self.find(name)
        if holder is not None and holder is not owner:
            raise NameTaken(f"{holder.name} is taken")

    def _add(self, user: User) -> None:
        self._by_name[fold(user.name)] = user
        user.present = True
        self._order[user] = None
        if self._names is not None:
            self._names = linewire.add_name(self._names, user.name)
        if isinstance(user, BinaryUser):
            self._binary_users[user] = None
            self._hosts[user.host] += 1

    def _check_room(self, host: str) -> None:
        if len(self._binary_users) >= self.limits.max_binary_users:
            raise TooManyUsers("the server holds all the users it may")
        if self._hosts[host] >= self.limits.max_binary_users_per_host:
            raise TooManyUsersFromHost(f"{host} holds all the users it may")

    def _lookup(self, name: str) -> User:
        user = self.find(name)
        if user is None:
            raise NoSuchUser(f"nobody is called {name}")
        return user

    def _deliver(self, sender: User, receiver: User, text: str) -> None:
        if isinstance(receiver, LineUser):
            self.send(receiver.session, linewire.privmsg(sender.name, text))
            self.tally.pushed += 1
        elif isinstance(receiver, BinaryUser):
            # _mail_one inline: this is the hot path of binary sends.
            if not self._post(receiver, sender.name, text, getattr(sender, "host", None)):
                self.tally.mailbox_full += 1
                raise MailboxFull([receiver.name])
            self.tally.mailed += 1

    def _mail_one(
        self, receiver: BinaryUser, sender: str, text: str, host: str | None = None
    ) -> None:
        """Queue mail for one user, counted; raise L{MailboxFull} if there is no room."""
        if self._post(receiver, sender, text, host):
            self.tally.mailed += 1
        else:
            self.tally.mailbox_full += 1
            raise MailboxFull([receiver.name])

    def _post(
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

    def _count_shares(self, user: BinaryUser) -> None:
        """Count C{user}'s waiting mail by sender anew, after it changed whole."""
        if not self._sharing or not user.mailbox:
            return
        shares = user.shares = {}
        for mail in user.mailbox:
            folded = fold(mail.sender)
            shares[folded] = shares.get(folded, 0) + 1

    def _not_yet_told(self, full: list[BinaryUser], sender: str) -> list[str]:
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

    def _put_back(self, reason: Failure, user: BinaryUser, mail: list[Mail]) -> None:
        if self.is_current(user):
            # Older than any mail that came since: back at the front.
            user.mailbox[:0] = mail
            self._count_shares(user)
            self.store.put_back_mail(user.key, mail)

    def _announce(self, data: bytes, exclude: User | None = None) -> None:
        """Send C{data} to every line user but C{exclude}."""
        skip = exclude.session if isinstance(exclude, LineUser) else None
        if not self._batches:
            for session in self._line_sessions:
                if session is not skip:
                    session.deliver(data)
            return
        if skip is not None:
            # Its own list from here: it has had the common lines so far.
            self._own_list(skip)
        self._common.append(data)
        for session, own in self._own.items():
            if session is not skip:
                own.append(data)

    def _own_list(self, session: Session) -> list[bytes]:
        """The list of what C{session} alone gets in this batch."""
        if session not in self._line_sessions:
            return self._apart.setdefault(session, [])
        own = self._own.get(session)
        if own is None:
            own = self._own[session] = list(self._common)
        return own

    def _end_batch(self) -> None:
        """The outermost batch is over: flush now, or at the end of the turn."""
        if self.clock is None:
            self.flush()
        else:
            # Hold on until the reactor has handled every read of this turn:
            # a call for "0 seconds from now" runs right after them.
            self._batches = 1
            self.clock.callLater(0, self._end_turn)

    def _end_turn(self) -> None:
        self._batches -= 1
        if not self._batches:
            self.flush()


# What a peer host's count among a mailbox's shares is kept under.
_HOST = "\0"
# The most senders a mailbox remembers having told it is full.
_MOST_TOLD = 256


class _Batch:
    """L{Hub.batch}: a plain class, as cheap as a context manager can be."""

    __slots__ = ("_hub",)

    def __init__(self, hub: Hub) -> None:
        self._hub = hub

    def __enter__(self) -> None:
        self._hub._batches += 1

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        hub = self._hub
        hub._batches -= 1
        if not hub._batches:
            hub._end_batch()
