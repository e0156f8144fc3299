"""Several nodes, one server: the PostgreSQL set of the hub's three parts.

L{PostgresNames} claims names by the database's unique index and keeps a
replica of the user list on each node, so C{!users}, C{users} and the checks
that need no engine answer from memory as on one node; L{NotifyDelivery}
routes messages in the database and sends what users must be told as events
by C{NOTIFY}; L{PostgresMailboxes} keeps mail in its tables. Every change
goes to the one L{Engine} as an L{Op} (through the node's L{Link}), so what
one turn of the reactor changes is one transaction. Every node, the
sender's too, applies the events in the order PostgreSQL delivers them,
which is the order of the commits: so every node sees the same arrivals,
departures and messages in the same order, and each reaches a user once,
from the node it is connected to.

A node holds a lease: a row it renews every fifth of C{--node-lease}
(L{RENEW}). The others take a dead node's line users away once it has not
renewed for three quarters of its lease (L{EXPIRE}), so within the lease
however the renewals fall; a node that has not renewed for three fifths of
its lease (L{CUT_OFF}) drops its own line users first, so that no name is
ever held twice.
"""

from __future__ import annotations

import uuid
from itertools import count
from typing import Any, Sequence

from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from chatd import linewire
from chatd.deadline import cancelled
from chatd.delivery import LocalDelivery, Session
from chatd.hub import Hub
from chatd.mailboxes import not_yet_told
from chatd.names import BinaryUser, LineUser, LocalNames, User
from chatd.postgres import Engine, Listener
from chatd.rules import (
    Ending,
    Limits,
    MailboxFull,
    NameTaken,
    NoSuchUser,
    TooManyUsers,
    TooManyUsersFromHost,
    check_name,
    fold,
)
from chatd.store import Mail, StoreFailed


# Fractions of --node-lease: how often a node renews its lease, after how
# long without a renewal it drops its own line users, and after how long the
# others take them away. CUT_OFF < EXPIRE: a node cut off lets its users go
# before anyone else may; EXPIRE + RENEW < 1: the others notice a dead node
# within its lease.
RENEW = 0.2
CUT_OFF = 0.6
EXPIRE = 0.75


class RemoteUser(User):
    """A line user of another node: listed and found here, reached through its node."""

    __slots__ = ()


# The ops: each runs in the engine's thread, in the batch's transaction.


class _Op:
    claims: Sequence[str] = ()
    retry = False


class JoinLine(_Op):
    def __init__(self, name: str, node: str, req: int) -> None:
        self.name, self.node, self.req = name, node, req
        self.claims = (fold(name),)

    def run(self, cursor: Any) -> tuple[Any, list[Any]]:
        row = cursor.execute(
            "INSERT INTO chatd_users (folded, name, kind, node, host) VALUES (%s, %s, 'l', %s, '')"
            " ON CONFLICT (folded) DO NOTHING RETURNING seq",
            (fold(self.name), self.name, self.node),
        ).fetchone()
        if row is None:
            return _holder(cursor, self.name), []
        return row[0], [["j", row[0], self.name, "l", self.node, "", self.req]]


class Register(_Op):
    def __init__(self, name: str, host: str, node: str, req: int, limits: Limits) -> None:
        self.name, self.host, self.node, self.req, self.limits = name, host, node, req, limits
        self.claims = (fold(name),)

    def run(self, cursor: Any) -> tuple[Any, list[Any]]:
        row = cursor.execute(
            "SELECT seq, kind, host, name FROM chatd_users WHERE folded = %s", (fold(self.name),)
        ).fetchone()
        if row is not None:
            seq, kind, host, name = row
            return (("back", seq) if kind == "b" and host == self.host else ("taken", name)), []
        total, here = cursor.execute(
            "SELECT count(*), count(*) FILTER (WHERE host = %s) FROM chatd_users"
            " WHERE kind = 'b'",
            (self.host,),
        ).fetchone()
        if total >= self.limits.max_binary_users:
            return ("full",), []
        if here >= self.limits.max_binary_users_per_host:
            return ("host-full",), []
        (seq,) = cursor.execute(
            "INSERT INTO chatd_users (folded, name, kind, node, host) VALUES (%s, %s, 'b', NULL, %s)"
            " RETURNING seq",
            (fold(self.name), self.name, self.host),
        ).fetchone()
        return ("new", seq), [["j", seq, self.name, "b", self.node, self.host, self.req]]


def _holder(cursor: Any, name: str) -> tuple[str, str]:
    """A claim of C{name} lost: who holds it, as the refusal names it."""
    row = cursor.execute("SELECT name FROM chatd_users WHERE folded = %s", (fold(name),)).fetchone()
    return ("taken", row[0] if row is not None else name)


class Rename(_Op):
    def __init__(self, seq: int, new: str) -> None:
        self.seq, self.new = seq, new
        self.claims = (fold(new),)

    def run(self, cursor: Any) -> tuple[Any, list[Any]]:
        row = cursor.execute(
            "UPDATE chatd_users SET folded = %s, name = %s WHERE seq = %s AND NOT EXISTS"
            " (SELECT 1 FROM chatd_users WHERE folded = %s AND seq <> %s) RETURNING seq",
            (fold(self.new), self.new, self.seq, fold(self.new), self.seq),
        ).fetchone()
        if row is None:
            return _holder(cursor, self.new), []
        return True, [["r", self.seq, self.new]]


class Leave(_Op):
    def __init__(self, seq: int, retry: bool) -> None:
        self.seq, self.retry = seq, retry

    def run(self, cursor: Any) -> tuple[Any, list[Any]]:
        row = cursor.execute(
            "DELETE FROM chatd_users WHERE seq = %s RETURNING seq", (self.seq,)
        ).fetchone()
        return None, ([["x", self.seq]] if row is not None else [])


# Room for one more message from a sender in a binary user's mailbox:
# under the mailbox size, and under the sender's share of it (fair mail).
_NO_ROOM = """
    (SELECT count(*) FROM chatd_mail m WHERE m.receiver = u.seq) >= %(size)s
    OR (SELECT count(*) FROM chatd_mail m
        WHERE m.receiver = u.seq AND m.sender_key = %(key)s) >= %(share)s
    OR (%(host)s <> '' AND (SELECT count(*) FROM chatd_mail m
        WHERE m.receiver = u.seq AND m.sender_host = %(host)s) >= %(host_share)s)
"""


def _room(limits: Limits) -> dict[str, int]:
    """The limits that say whether a mailbox has room, as the queries name them."""
    return {
        "size": limits.mailbox_size,
        "share": limits.mailbox_share,
        "host_share": limits.mailbox_host_share,
    }


def _host(sender: User) -> str:
    """The peer host whose share of a mailbox C{sender}'s mail counts against."""
    return getattr(sender, "host", None) or ""


class SayAll(_Op):
    def __init__(
        self, seq: int, name: str, text: str, mail: bool, limits: Limits, host: str
    ) -> None:
        self.seq, self.name, self.text, self.mail, self.limits = seq, name, text, mail, limits
        self.host = host

    def run(self, cursor: Any) -> tuple[Any, list[Any]]:
        full: list[str] = []
        if self.mail:
            params = {
                "seq": self.seq, "name": self.name, "text": self.text, "key": fold(self.name),
                "host": self.host, **_room(self.limits),
            }
            full = [
                name
                for (name,) in cursor.execute(
                    "SELECT name FROM chatd_users u WHERE kind = 'b' AND seq <> %(seq)s"
                    f" AND ({_NO_ROOM}) ORDER BY seq",
                    params,
                )
            ]
            cursor.execute(
                "INSERT INTO chatd_mail (receiver, sender, sender_key, sender_host, text)"
                " SELECT seq, %(name)s, %(key)s, %(host)s, %(text)s FROM chatd_users u"
                f" WHERE kind = 'b' AND seq <> %(seq)s AND NOT ({_NO_ROOM}) ORDER BY seq",
                params,
            )
        return full, [["m", self.seq, self.name, self.text]]


# Messages to users by name, in one statement: the receiver is found in the
# database (another node's new user may not be in this node's copy yet), and
# mail queued for a binary user with room. A receiver getting several is
# full from the one that would pass the mailbox size or the sender's share.
_MAIL_MANY = """
WITH r AS (
    SELECT * FROM unnest(%(folded)s::text[], %(senders)s::text[], %(keys)s::text[],
                         %(hosts)s::text[], %(texts)s::text[])
        WITH ORDINALITY AS r(folded, sender, key, host, text, ord)
), ru AS (
    SELECT r.*, u.seq, u.kind, u.name FROM r LEFT JOIN chatd_users u ON u.folded = r.folded
), held AS (
    -- Each receiver's mailbox read once, however many messages it gets.
    SELECT m.receiver, m.sender_key, m.sender_host, count(*) AS n FROM chatd_mail m
    WHERE m.receiver IN (SELECT seq FROM ru) GROUP BY m.receiver, m.sender_key, m.sender_host
), total AS (
    SELECT receiver, sum(n) AS n FROM held GROUP BY receiver
), by_key AS (
    SELECT receiver, sender_key, sum(n) AS n FROM held GROUP BY receiver, sender_key
), by_host AS (
    SELECT receiver, sender_host, sum(n) AS n FROM held GROUP BY receiver, sender_host
), t AS (
    SELECT ru.ord, ru.seq, ru.sender, ru.key, ru.host, ru.text, ru.kind, ru.name,
           ru.kind = 'b' AND (
               coalesce(total.n, 0)
                   + row_number() OVER (PARTITION BY ru.seq ORDER BY ru.ord) > %(size)s
               OR coalesce(by_key.n, 0)
                   + row_number() OVER (PARTITION BY ru.seq, ru.key ORDER BY ru.ord) > %(share)s
               OR ru.host <> '' AND coalesce(by_host.n, 0)
                   + row_number() OVER (PARTITION BY ru.seq, ru.host ORDER BY ru.ord)
                   > %(host_share)s
           ) AS is_full
    FROM ru
    LEFT JOIN total ON total.receiver = ru.seq
    LEFT JOIN by_key ON by_key.receiver = ru.seq AND by_key.sender_key = ru.key
    LEFT JOIN by_host ON by_host.receiver = ru.seq AND by_host.sender_host = ru.host
), queued AS (
    INSERT INTO chatd_mail (receiver, sender, sender_key, sender_host, text)
    SELECT seq, sender, key, host, text FROM t WHERE kind = 'b' AND NOT is_full ORDER BY ord
)
SELECT ord, seq, kind, is_full, name FROM t ORDER BY ord
"""


class SayTo(_Op):
    """A message to one user by name: pushed to a line user, or mailed."""

    def __init__(self, receiver: str, sender: str, text: str, limits: Limits, host: str) -> None:
        self.folded, self.sender, self.text, self.limits = fold(receiver), sender, text, limits
        self.host = host

    @staticmethod
    def run_many(cursor: Any, ops: list[SayTo]) -> list[tuple[Any, list[Any]]]:
        rows = cursor.execute(
            _MAIL_MANY,
            {
                "folded": [op.folded for op in ops],
                "senders": [op.sender for op in ops],
                "keys": [fold(op.sender) for op in ops],
                "hosts": [op.host for op in ops],
                "texts": [op.text for op in ops],
                **_room(ops[0].limits),
            },
        ).fetchall()
        out: list[tuple[Any, list[Any]]] = []
        for op, (_, seq, kind, full, name) in zip(ops, rows):
            if kind is None:
                out.append((("none", None), []))
            elif kind == "l":
                out.append((("ok", name), [["t", seq, op.sender, op.text]]))
            else:
                out.append(((("full" if full else "ok"), name), []))
        return out

    def run(self, cursor: Any) -> tuple[Any, list[Any]]:
        return self.run_many(cursor, [self])[0]


class Poke(_Op):
    """A poke by name: shown to every line user; a binary user gets it as mail."""

    def __init__(self, poked: str, poker: str, limits: Limits, host: str) -> None:
        self.folded, self.poker, self.limits, self.host = fold(poked), poker, limits, host

    def run(self, cursor: Any) -> tuple[Any, list[Any]]:
        params = {
            "folded": self.folded, "key": fold(self.poker), "host": self.host,
            **_room(self.limits),
        }
        row = cursor.execute(
            f"SELECT seq, kind, name, kind = 'b' AND ({_NO_ROOM}) FROM chatd_users u"
            " WHERE folded = %(folded)s",
            params,
        ).fetchone()
        if row is None:
            return ("none", None), []
        seq, kind, name, full = row
        text = linewire.poke(self.poker, name)
        if kind == "b" and not full:
            cursor.execute(
                "INSERT INTO chatd_mail (receiver, sender, sender_key, sender_host, text)"
                " VALUES (%s, %s, %s, %s, %s)",
                (seq, self.poker, fold(self.poker), self.host, text),
            )
        return (("full" if full else "ok"), name), [["p", text]]


class TakeMail(_Op):
    def __init__(self, seq: int) -> None:
        self.seq = seq

    def start(self, db: Any) -> Any:
        # One DELETE: two nodes taking the same mailbox at once never both get a message.
        cursor = db.cursor()
        cursor.execute(
            "DELETE FROM chatd_mail WHERE receiver = %s RETURNING id, sender, text", (self.seq,)
        )
        return cursor

    def finish(self, cursor: Any) -> tuple[Any, list[Any]]:
        return sorted(Mail(*row) for row in cursor.fetchall()), []

    def run(self, cursor: Any) -> tuple[Any, list[Any]]:
        raise NotImplementedError("started and finished")


class ListUsers(_Op):
    """Every user of every node, as committed when the batch runs."""

    def run(self, cursor: Any) -> tuple[Any, list[Any]]:
        rows = cursor.execute("SELECT name FROM chatd_users ORDER BY seq").fetchall()
        return [name for (name,) in rows], []


class Renew(_Op):
    """Renew this node's lease, and take the line users of nodes whose lease ran out."""

    def __init__(self, node: str, lease: float) -> None:
        self.node, self.lease = node, lease

    def run(self, cursor: Any) -> tuple[Any, list[Any]]:
        row = cursor.execute(
            "UPDATE chatd_nodes SET renewed = now(), lease = %s WHERE id = %s RETURNING id",
            (self.lease, self.node),
        ).fetchone()
        if row is None:
            cursor.execute(
                "INSERT INTO chatd_nodes (id, lease) VALUES (%s, %s)", (self.node, self.lease)
            )
        cursor.execute(
            "DELETE FROM chatd_nodes WHERE renewed < now() - lease * %s * interval '1 second'",
            (EXPIRE,),
        )
        gone = cursor.execute(
            "DELETE FROM chatd_users u WHERE kind = 'l' AND NOT EXISTS"
            " (SELECT 1 FROM chatd_nodes n WHERE n.id = u.node) RETURNING seq"
        ).fetchall()
        # For chatd_mailbox_messages: every node's mail, counted a lease's
        # fifth apart rather than on every scrape, which cannot wait on it.
        (mail,) = cursor.execute("SELECT count(*) FROM chatd_mail").fetchone()
        return (row is not None, mail), [["x", seq] for (seq,) in gone]


class Depart(_Op):
    """A node that stops: its row and whatever line users it still has."""

    def __init__(self, node: str) -> None:
        self.node = node

    def run(self, cursor: Any) -> tuple[Any, list[Any]]:
        gone = cursor.execute(
            "DELETE FROM chatd_users WHERE kind = 'l' AND node = %s RETURNING seq", (self.node,)
        ).fetchall()
        cursor.execute("DELETE FROM chatd_nodes WHERE id = %s", (self.node,))
        return None, [["x", seq] for (seq,) in gone]


class Link:
    """This node's way to the engine: its id, and whether it may act for its users.

    The three parts of a node submit their ops to one L{Engine} through it,
    so what one turn of the reactor changes is still one transaction.
    """

    def __init__(self, engine: Engine, node: str) -> None:
        self.engine = engine
        self.node = node
        # Whether this node has lost its lease and acts for nobody meanwhile.
        self.cut_off = False
        # The messages waiting in every mailbox, as of the last renewal.
        self.mail = 0

    def submit(self, op: Any) -> Deferred[Any]:
        if self.cut_off:
            return fail(StoreFailed("this node has lost its lease"))
        return self.engine.submit(op)


class PostgresNames(LocalNames):
    """Names claimed in PostgreSQL, and this node's replica of every node's users.

    The methods that change something return a Deferred that fires once the
    change is committed (and, for a join, once this node has seen it), or
    fails with the usual L{ChatError}, or L{StoreFailed}. The replica is kept
    from the events of every node, in commit order, and answers the rest.
    """

    log = Logger()

    def __init__(self, link: Link) -> None:
        super().__init__()
        self.link = link
        self._users: dict[int, User] = {}
        self._seqs: dict[User, int] = {}
        # Joins and registrations of this node waiting for their event.
        self._reqs = count(1)
        self._joining: dict[int, tuple[Session | None, Deferred[Any]]] = {}
        # Their rows, once committed: a node that reads the user list afresh
        # (its listener reconnected) completes them from there.
        self._claims: dict[int, int] = {}
        # Rows of this node's own line users read from the user list before
        # their claim came back (a join committed before this node listened):
        # completed once it does.
        self._early: dict[int, tuple[str, str, str | None, str]] = {}

    # Changes

    def join_line(self, name: str, session: Session) -> Deferred[LineUser]:  # type: ignore[override]
        check_name(name, self.limits)
        # Claimed in the database alone: this node's copy may still show a
        # name another node has just freed.
        return self._join(session, JoinLine(name, self.link.node, self._req()), name)

    def register(self, name: str, host: str) -> Deferred[tuple[BinaryUser, bool]]:  # type: ignore[override]
        check_name(name, self.limits)
        op = Register(name, host, self.link.node, self._req(), self.limits)
        return self._join(None, op, name)

    def rename(self, user: LineUser, new: str) -> Deferred[None]:  # type: ignore[override]
        check_name(new, self.limits)

        def renamed(done: Any) -> None:
            if done is not True:
                raise NameTaken(f"{done[1]} is taken")

        return self.submit_as(Rename, user, new).addCallback(renamed)

    def leave(self, user: User) -> Deferred[None] | None:  # type: ignore[override]
        if not self.is_current(user):
            return None
        user.present = False
        if isinstance(user, LineUser):
            self.delivery.detach(user.session)
        seq = self._seqs.get(user)
        if seq is None:
            return None
        # A departure nobody waits on is tried until it is stored: a line
        # user's name must not outlive its connection.
        return self.link.engine.submit(Leave(seq, retry=isinstance(user, LineUser)))

    def current_names(self) -> Deferred[list[str]]:  # type: ignore[override]
        """Asked of the database, not of this node's replica: a user another
        node has just acknowledged is listed even if its event is still on
        its way here. Without the database, this node's copy answers."""
        return self.link.submit(ListUsers()).addErrback(self._replica_names)

    def _replica_names(self, reason: Failure) -> list[str]:
        reason.trap(StoreFailed)
        return self.names()

    def current_users_line(self) -> Deferred[bytes]:  # type: ignore[override]
        return self.current_names().addCallback(
            lambda names: linewire.users_line(len(names), linewire.encode_names(names))
        )

    # What the other parts ask

    def user_at(self, seq: int) -> User | None:
        """The user whose row is C{seq}, if this node has seen it."""
        return self._users.get(seq)

    def submit_as(self, kind: Any, user: User, *args: Any) -> Deferred[Any]:
        """Submit the op C{kind} about C{user}, whose row's key is its first argument."""
        seq = self._seqs.get(user)
        if seq is None and not self.link.cut_off:
            # Taken away by another node while this command was on its way.
            return fail(StoreFailed(f"{user.name} no longer holds its name"))
        return self.link.submit(kind(seq, *args))

    def drop_local(self) -> None:
        """Stop acting for this node's line users: end their connections."""
        for user in list(self._users.values()):
            if isinstance(user, LineUser) and user.present:
                user.session.end(Ending.NODE_LOST)  # type: ignore[attr-defined]

    # Events, in commit order, from every node

    def snapshot(self, rows: list[tuple[Any, ...]]) -> None:
        """Catch up with the user list as the database has it, once listening (again)."""
        with self.delivery.batch():
            seen = set()
            for seq, name, kind, node, host in rows:
                seen.add(seq)
                user = self._users.get(seq)
                if user is None:
                    self.joined(seq, name, kind, node, host, None)
                elif user.name != name:
                    self.renamed(seq, name)
            for seq in [seq for seq in self._users if seq not in seen]:
                self.gone(seq)

    def joined(
        self, seq: int, name: str, kind: str, node: str | None, host: str, req: int | None
    ) -> None:
        if node != self.link.node:
            # Another node's counter: its requests are not this node's.
            req = None
        if req is None:
            req = self._claims.pop(seq, None)
        else:
            self._claims.pop(seq, None)
        if seq in self._users:
            return
        if req is None and kind == "l" and node == self.link.node:
            self._early[seq] = (name, kind, node, host)
            return
        pending = self._joining.pop(req, None) if req is not None else None
        stale = self._by_name.get(fold(name))
        if stale is not None and stale in self._seqs:
            # Its departure is on its way; the database says the name moved on.
            self.gone(self._seqs[stale])
        user: User
        if kind == "b":
            user = BinaryUser(name, host, seq)
            self.mailboxes.add(user)
        elif pending is not None and pending[0] is not None:
            user = LineUser(name, pending[0], getattr(pending[0], "host", "local"))
        else:
            user = RemoteUser(name)
        self._users[seq] = user
        self._seqs[user] = seq
        self.add(user)
        skip = None
        if isinstance(user, LineUser):
            self.delivery.attach(user.session)
            skip = user.session
        self.delivery.announce(linewire.joined(name), skip)
        if pending is not None:
            pending[1].callback((user, True) if kind == "b" else user)

    def renamed(self, seq: int, new: str) -> None:
        user = self._users.get(seq)
        if user is None or user.name == new:
            return
        self._rename(user, new)

    def gone(self, seq: int) -> None:
        self._early.pop(seq, None)
        user = self._users.pop(seq, None)
        if user is None:
            return
        del self._seqs[user]
        present = user.present
        self._forget(user)
        if isinstance(user, LineUser) and present:
            # Taken away by another node (this one's lease ran out): end it.
            self.delivery.detach(user.session)
            user.session.end(Ending.NODE_LOST)  # type: ignore[attr-defined]
        if isinstance(user, BinaryUser):
            self.mailboxes.remove(user)
        self.delivery.announce(linewire.left(user.name))

    # Internals

    def _req(self) -> int:
        return next(self._reqs)

    def _join(self, session: Session | None, op: JoinLine | Register, name: str) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        if self.link.cut_off:
            return fail(StoreFailed("this node has lost its lease"))
        self._joining[op.req] = (session, d)
        self.link.engine.submit(op).addCallbacks(
            self._claimed, self._not_claimed, (op.req, name), None, (op.req,)
        )
        return d

    def _claimed(self, result: Any, req: int, name: str) -> None:
        if isinstance(result, tuple) and result[0] == "back":
            self._claimed_back(result[1], req, name)
            return
        seq = result[1] if isinstance(result, tuple) and result[0] == "new" else result
        if isinstance(seq, int):
            # Its event completes it, here as on every node.
            if req in self._joining:
                early = self._early.pop(seq, None)
                if early is None:
                    self._claims[seq] = req
                else:
                    self.joined(seq, *early, req)
            return
        pending = self._joining.pop(req, None)
        if pending is not None:
            pending[1].errback(_refusal(result, name))

    def _claimed_back(self, seq: int, req: int, name: str) -> None:
        """A binary name claimed again from its host: nothing changed."""
        pending = self._joining.pop(req, None)
        user = self._users.get(seq)
        if pending is None:
            return
        if isinstance(user, BinaryUser):
            user.present = True
            pending[1].callback((user, False))
        else:
            pending[1].errback(NameTaken(f"{name} is taken"))

    def _not_claimed(self, reason: Failure, req: int) -> None:
        pending = self._joining.pop(req, None)
        if pending is not None:
            pending[1].errback(reason)


class NotifyDelivery(LocalDelivery):
    """Messages routed by PostgreSQL: each op sends its deliveries as events,
    by C{NOTIFY} with the turn's transaction, and every node writes those
    for its own line users to their sessions, as L{LocalDelivery} does.

    A message to a binary user is queued by the same statement that finds
    the receiver (L{SayTo}, L{SayAll}, L{Poke}), in the mail tables of
    L{PostgresMailboxes}: one statement, not a lookup and then an insert.
    """

    names: PostgresNames
    mailboxes: PostgresMailboxes  # type: ignore[assignment]

    def __init__(self, clock: IReactorTime, link: Link) -> None:
        super().__init__(clock)
        self.link = link

    def bind(self, hub: Any) -> None:
        super().bind(hub)
        self.limits = hub.limits

    def say_all(self, sender: User, text: str) -> Deferred[None]:  # type: ignore[override]
        mail = self.mailboxes.any_besides(sender)
        op = (SayAll, sender, sender.name, text, mail, self.limits, _host(sender))
        return self.names.submit_as(*op).addCallback(self._full_news, fold(sender.name))

    def say_to(  # type: ignore[override]
        self, sender: User, receiver: str, text: str
    ) -> Deferred[None]:
        # Found by the database, not this node's copy: a user another node
        # has just acknowledged may not have reached it yet.
        op = SayTo(receiver, sender.name, text, self.limits, _host(sender))
        return self.link.submit(op).addCallback(_outcome, receiver)

    def poke(self, poker: User, poked: str) -> Deferred[None]:  # type: ignore[override]
        op = Poke(poked, poker.name, self.limits, _host(poker))
        return self.link.submit(op).addCallback(_outcome, poked)

    def _full_news(self, full: list[str], sender: str) -> None:
        """Fair mail: name each full mailbox to a broadcast's sender once, as on one node."""
        users = [u for u in map(self.names.find, full) if isinstance(u, BinaryUser)]
        news = self.mailboxes.not_yet_told(users, sender) if users else []
        if news:
            raise MailboxFull(news)

    def receive(self, events: list[Any]) -> None:
        """Apply what the nodes committed: deliver, announce, join and leave."""
        names = self.names
        with self.batch():
            for event in events:
                kind = event[0]
                if kind == "m":
                    sender = names.user_at(event[1])
                    skip = sender.session if isinstance(sender, LineUser) else None
                    self.announce(linewire.msg(event[2], event[3]), skip)
                elif kind == "t":
                    target = names.user_at(event[1])
                    if isinstance(target, LineUser) and target.present:
                        self.send(target.session, linewire.privmsg(event[2], event[3]))
                elif kind == "p":
                    self.announce(linewire.encode(event[1]))
                elif kind == "j":
                    names.joined(*event[1:])
                elif kind == "r":
                    names.renamed(event[1], event[2])
                elif kind == "x":
                    names.gone(event[1])


class PostgresMailboxes:
    """Mailboxes in PostgreSQL's C{chatd_mail}, one for each binary user of every node.

    Mail is queued by the statements that route it (L{NotifyDelivery}) and
    taken by one C{DELETE} (L{TakeMail}). This node keeps the set of binary
    users, to know whether a broadcast has any mail to queue, and whom it
    told of a full mailbox.
    """

    def __init__(self, link: Link) -> None:
        self.link = link
        self._boxes: dict[BinaryUser, None] = {}

    def bind(self, hub: Any) -> None:
        self.names: PostgresNames = hub.namespace

    def load(self) -> list[BinaryUser]:
        # The node's replica is filled from the user list (PostgresNames.snapshot).
        return []

    def add(self, user: BinaryUser) -> None:
        self._boxes[user] = None

    def remove(self, user: BinaryUser) -> None:
        self._boxes.pop(user, None)

    def any_besides(self, sender: User) -> bool:
        """Whether a binary user other than C{sender} has a mailbox."""
        return any(user is not sender for user in self._boxes)

    def take_mail(self, user: BinaryUser) -> Deferred[list[Mail]]:
        # Senders of broadcasts are told of a full mailbox again once it was
        # emptied (this node remembers whom it told).
        user.told = None
        return self.names.submit_as(TakeMail, user)

    def not_yet_told(self, full: list[BinaryUser], sender: str) -> list[str]:
        return not_yet_told(full, sender)

    def settled(self) -> bool:
        return self.link.engine.settled()

    def committed(self) -> Deferred[None]:
        return self.link.engine.committed()

    def census(self) -> tuple[int, int]:
        """Binary users, and the mail of every node's as of the last renewal."""
        return len(self._boxes), self.link.mail


def node_hub(
    limits: Limits, engine: Engine, reactor: IReactorTime, lease: float
) -> tuple[Hub, Node]:
    """A hub of the PostgreSQL set, and the node service that keeps it in the cluster."""
    link = Link(engine, new_node_id())
    names = PostgresNames(link)
    delivery = NotifyDelivery(reactor, link)
    hub = Hub(limits, clock=reactor, names=names, delivery=delivery,
              mailboxes=PostgresMailboxes(link))
    return hub, Node(link, names, delivery, reactor, lease)


def _outcome(result: tuple[str, str | None], asked: str) -> None:
    outcome, name = result
    if outcome == "none":
        raise NoSuchUser(f"nobody is called {asked}")
    if outcome == "full":
        raise MailboxFull([name or asked])


def _refusal(result: Any, name: str) -> Exception:
    if result == ("full",):
        return TooManyUsers("the server holds all the users it may")
    if result == ("host-full",):
        return TooManyUsersFromHost("your host holds all the users it may")
    holder = result[1] if isinstance(result, tuple) and len(result) > 1 else name
    return NameTaken(f"{holder} is taken")



class Node(Service):
    """This node's life in the cluster: its lease, and the events it listens to."""

    log = Logger()

    def __init__(
        self, link: Link, names: PostgresNames, delivery: NotifyDelivery, reactor: Any,
        lease: float,
    ) -> None:
        self.link = link
        self.names = names
        self.engine = link.engine
        self.reactor = reactor
        self.lease = lease
        self.listener = Listener(self.engine.uri, reactor, names.snapshot, delivery.receive)
        self._tick: IDelayedCall | None = None
        # When the last renewal that went through was sent.
        self._renewed = 0.0
        self._first = True

    def startService(self) -> None:
        super().startService()
        self._renewed = self.reactor.seconds()
        self.listener.start()
        self._renew()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        self._tick = cancelled(self._tick)
        d = self.engine.submit(Depart(self.link.node))
        d.addErrback(lambda reason: None)
        d.addBoth(lambda _: self.reactor.callInThread(self.listener.stop))
        return d

    def _renew(self) -> None:
        self._tick = self.reactor.callLater(self.lease * RENEW, self._renew)
        sent = self.reactor.seconds()
        if sent - self._renewed > self.lease * CUT_OFF:
            self._cut_off()
        self.engine.submit(Renew(self.link.node, self.lease)).addCallbacks(
            self._held, self._failed, (sent,)
        )

    def _held(self, renewed: tuple[bool, int], sent: float) -> None:
        kept, self.link.mail = renewed
        first, self._first = self._first, False
        if not kept and not first and not self.link.cut_off:
            # Another node took this one's users away: they are being ended.
            self.log.warn("this node's lease ran out; its line users were taken away")
        self._renewed = max(self._renewed, sent)
        if self.link.cut_off:
            self.link.cut_off = False
            self.log.info("the database is back: this node serves again")

    def _failed(self, reason: Failure) -> None:
        if self.reactor.seconds() - self._renewed > self.lease * CUT_OFF:
            self._cut_off()

    def _cut_off(self) -> None:
        if not self.link.cut_off:
            self.log.error(
                "no contact with the database for {lease:.1f} s: dropping this node's line users",
                lease=self.lease * CUT_OFF,
            )
            self.link.cut_off = True
            self.names.drop_local()


def new_node_id() -> str:
    return uuid.uuid4().hex[:16]
