"""How a message reaches a user: written to its session, or left in its mailbox.

L{LocalDelivery} writes to the sessions of this process. While a
connection's read is handled (L{LocalDelivery.batch}), what it sends is
held, and each session then gets it all in one write: the lines every line
user gets alike are joined once and shared; a session that gets something
else (a reply, a private message, or is left out of its own message) gets a
list of its own. Given a clock (the reactor), it holds on to the end of the
reactor's turn, so that the reads of many clients handled in one turn (a
burst of joins, several senders) still give each session one write.

With several nodes, L{chatd.cluster.NotifyDelivery} routes messages through
PostgreSQL instead, and every node writes them to its own sessions as here.
"""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

from chatd import linewire
from chatd.names import BinaryUser, LineUser, User
from chatd.rules import MailboxFull, NoSuchUser, fold

if TYPE_CHECKING:
    from chatd.hub import Hub
    from chatd.mailboxes import LocalMailboxes


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


class Delivery(Protocol):
    """How a message reaches a user wherever it is: what the hub needs of it."""

    def bind(self, hub: Hub) -> None:
        """Work with C{hub}'s names and mailboxes from now on."""

    def say_all(self, sender: User, text: str) -> Deferred[None] | None:
        """Send C{text} to every other user; L{MailboxFull} names mailboxes without room."""

    def say_to(self, sender: User, receiver: str, text: str) -> Deferred[None] | None:
        """Send C{text} to the user named C{receiver} alone."""

    def poke(self, poker: User, poked: str) -> Deferred[None] | None:
        """Show every line user that C{poker} poked C{poked}; a binary user gets mail."""

    def batch(self) -> _Batch:
        """A context manager holding what is sent in it, then one write a session."""

    def send(self, session: Session, data: bytes) -> None:
        """Send C{data} to one session, in order with what is pushed to it."""

    def flush(self) -> None:
        """Write everything held, one write a session."""

    def flush_to(self, session: Session) -> None:
        """Write what is held for C{session} now, before it closes."""

    def attach(self, session: Session) -> None:
        """Push C{session} what is announced from now on: its line user joined."""

    def detach(self, session: Session) -> None:
        """Push C{session} nothing more: its line user is leaving."""

    def announce(self, data: bytes, skip: Session | None = None) -> None:
        """Push C{data} to every attached session but C{skip}."""

    def count(self) -> int:
        """How many sessions announcements reach."""


class LocalDelivery:
    """Messages to the sessions of this process, and to the mailboxes of
    L{chatd.mailboxes.LocalMailboxes}."""

    mailboxes: LocalMailboxes

    def __init__(self, clock: IReactorTime | None = None) -> None:
        self.clock = clock
        # An insertion-ordered set: the sessions of the line users, who are
        # pushed announcements.
        self._line_sessions: dict[Session, None] = {}
        # Output held during a batch: what every line session gets, unless
        # it has its own list in _own; and what sessions that get no
        # announcements (binary ones, line ones without a name) get, in _apart.
        self._batch = _Batch(self)
        self._batches = 0
        self._common: list[bytes] = []
        self._own: dict[Session, list[bytes]] = {}
        self._apart: dict[Session, list[bytes]] = {}

    def bind(self, hub: Hub) -> None:
        self.tally = hub.tally
        self.names = hub.namespace
        self.mailboxes = hub.mailboxes  # type: ignore[assignment]

    # Messages

    def say_all(self, sender: User, text: str) -> None:
        """Send C{text} from C{sender} to every other user of both protocols.

        @raise MailboxFull: naming the binary users whose mailbox had no room
            for it (full, or holding the sender's whole share) and who were
            not named to this sender since they last took their mail;
            everyone else got the message.
        """
        is_line = isinstance(sender, LineUser)
        self.announce(
            linewire.msg(sender.name, text),
            sender.session if is_line else None,  # type: ignore[attr-defined]
        )
        self.tally.pushed += len(self._line_sessions) - is_line
        full = self.mailboxes.post_all(sender, text)
        if full:
            news = self.mailboxes.not_yet_told(full, fold(sender.name))
            if news:
                raise MailboxFull(news)

    def say_to(self, sender: User, receiver: str, text: str) -> None:
        """Send C{text} from C{sender} to the user named C{receiver} alone."""
        user = self._lookup(receiver)
        if isinstance(user, LineUser):
            self.send(user.session, linewire.privmsg(sender.name, text))
            self.tally.pushed += 1
        elif isinstance(user, BinaryUser):
            # _mail_one inline: this is the hot path of binary sends.
            if not self.mailboxes.post(user, sender.name, text, getattr(sender, "host", None)):
                self.tally.mailbox_full += 1
                raise MailboxFull([user.name])
            self.tally.mailed += 1

    def poke(self, poker: User, poked: str) -> None:
        """Show every line user that C{poker} poked C{poked}; a binary user gets mail.

        @raise MailboxFull: the poke was shown, but a binary user's mailbox was full.
        """
        target = self._lookup(poked)
        line = linewire.poke(poker.name, target.name)
        self.announce(linewire.encode(line))
        self.tally.pushed += len(self._line_sessions)
        if isinstance(target, BinaryUser):
            if self.mailboxes.post(target, poker.name, line, getattr(poker, "host", None)):
                self.tally.mailed += 1
            else:
                self.tally.mailbox_full += 1
                raise MailboxFull([target.name])

    def _lookup(self, name: str) -> User:
        user = self.names.find(name)
        if user is None:
            raise NoSuchUser(f"nobody is called {name}")
        return user

    # Sessions

    def count(self) -> int:
        return len(self._line_sessions)

    def attach(self, session: Session) -> None:
        if self._batches:
            # It gets what is announced from now on, not what came before.
            self._own[session] = self._apart.pop(session, [])
        self._line_sessions[session] = None

    def detach(self, session: Session) -> None:
        if session not in self._line_sessions:
            return
        if self._batches:
            # It keeps what was announced before it left, and no more.
            self._apart[session] = self._own_list(session)
            del self._own[session]
        del self._line_sessions[session]

    # Sending

    def batch(self) -> _Batch:
        """Hold what is sent in a C{with} block, then write it: one write a session.

        A protocol wraps the handling of one read in this, so that a read
        with many commands gives each session one write, not one a line.
        """
        return self._batch

    def send(self, session: Session, data: bytes) -> None:
        """Send C{data} to one session, in order with what is pushed to it."""
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

    def announce(self, data: bytes, skip: Session | None = None) -> None:
        """Send C{data} to every line session but C{skip}."""
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


class _Batch:
    """L{LocalDelivery.batch}: a plain class, as cheap as a context manager can be."""

    __slots__ = ("_delivery",)

    def __init__(self, delivery: LocalDelivery) -> None:
        self._delivery = delivery

    def __enter__(self) -> None:
        self._delivery._batches += 1

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        delivery = self._delivery
        delivery._batches -= 1
        if not delivery._batches:
            delivery._end_batch()
