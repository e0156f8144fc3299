"""Several nodes, one server: a hub whose names, deliveries and mail live in PostgreSQL.

Each node keeps a replica of the user list, so C{!users}, C{users} and the
checks that need no engine answer from memory as on one node. Every change
goes to the L{Engine} as one L{Op}: names are claimed by the database's
unique index, mail is kept in its tables, and what users must be told goes
out as events by C{NOTIFY}. Every node, the sender's too, applies the events
in the order PostgreSQL delivers them, which is the order of the commits:
so every node sees the same arrivals, departures and messages in the same
order, and each reaches a user once, from the node it is connected to.

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
from chatd.hub import BinaryUser, Hub, LineUser, Session, User
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
        return row is not None, [["x", seq] for (seq,) in gone]


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


class ClusterHub(Hub):
    """The hub of one node: the shared state is PostgreSQL's; this is its replica.

    The methods that change something return a Deferred that fires once the
    change is committed (and, for a join, once this node has seen it), or
    fails with the usual L{ChatError}, or L{StoreFailed}.
    """

    log = Logger()

    def __init__(self, limits: Limits, engine: Engine, clock: IReactorTime, node: str) -> None:
        super().__init__(limits, None, clock)
        self.engine = engine
        self.node = node
        self._users: dict[int, User] = {}
        self._seqs: dict[User, int] = {}
        # Joins and registrations of this node waiting for their event.
        self._reqs = count(1)
        self._joining: dict[int, tuple[Session | None, Deferred[Any]]] = {}
        # Their rows, once committed: a node that reads the user list afresh
        # (its listener reconnected) completes them from there.
        self._claims: dict[int, int] = {}
        # Whether this node has lost its lease and acts for nobody meanwhile.
        self.cut_off = False

    def settled(self) -> bool:
        return self.engine.settled()

    def committed(self) -> Deferred[None]:
        return self.engine.committed()

    # Changes

    def join_line(self, name: str, session: Session) -> Deferred[LineUser]:  # type: ignore[override]
        check_name(name, self.limits)
        # Claimed in the database alone: this node's copy may still show a
        # name another node has just freed.
        return self._join(session, JoinLine(name, self.node, self._req()), name)

    def register(self, name: str, host: str) -> Deferred[tuple[BinaryUser, bool]]:  # type: ignore[override]
        check_name(name, self.limits)
        return self._join(None, Register(name, host, self.node, self._req(), self.limits), name)

    def rename(self, user: LineUser, new: str) -> Deferred[None]:  # type: ignore[override]
        check_name(new, self.limits)

        def renamed(done: Any) -> None:
            if done is not True:
                raise NameTaken(f"{done[1]} is taken")

        return self._submit(Rename, user, new).addCallback(renamed)

    def leave(self, user: User) -> Deferred[None] | None:  # type: ignore[override]
        if not self.is_current(user):
            return None
        user.present = False
        if isinstance(user, LineUser):
            self._detach(user.session)
        seq = self._seqs.get(user)
        if seq is None:
            return None
        # A departure nobody waits on is tried until it is stored: a line
        # user's name must not outlive its connection.
        return self.engine.submit(Leave(seq, retry=isinstance(user, LineUser)))

    def say_all(self, sender: User, text: str) -> Deferred[None]:  # type: ignore[override]
        mail = any(user is not sender for user in self._binary_users)
        return self._submit(
            SayAll, sender, sender.name, text, mail, self.limits, _host(sender)
        ).addCallback(
            self._full_news, fold(sender.name)
        )

    def say_to(self, sender: User, receiver: str, text: str) -> Deferred[None]:  # type: ignore[override]
        # Found by the database, not this node's copy: a user another node
        # has just acknowledged may not have reached it yet.
        op = (receiver, sender.name, text, self.limits, _host(sender))
        return self._submit(SayTo, None, *op).addCallback(
            _outcome, receiver
        )

    def poke(self, poker: User, poked: str) -> Deferred[None]:  # type: ignore[override]
        return self._submit(Poke, None, poked, poker.name, self.limits, _host(poker)).addCallback(
            _outcome, poked
        )

    def current_names(self) -> Deferred[list[str]]:  # type: ignore[override]
        """Asked of the database, not of this node's replica: a user another
        node has just acknowledged is listed even if its event is still on
        its way here. Without the database, this node's copy answers."""
        return self._submit(ListUsers, None).addErrback(self._replica_names)

    def _replica_names(self, reason: Failure) -> list[str]:
        reason.trap(StoreFailed)
        return self.names()

    def current_users_line(self) -> Deferred[bytes]:  # type: ignore[override]
        return self.current_names().addCallback(
            lambda names: linewire.users_line(len(names), linewire.encode_names(names))
        )

    def take_mail(self, user: BinaryUser) -> Deferred[list[Mail]]:  # type: ignore[override]
        # Senders of broadcasts are told of a full mailbox again once it was
        # emptied (this node remembers whom it told).
        user.told = None
        return self._submit(TakeMail, user)

    def _full_news(self, full: list[str], sender: str) -> None:
        """Fair mail: name each full mailbox to a broadcast's sender once, as on one node."""
        users = [u for u in map(self.find, full) if isinstance(u, BinaryUser)]
        news = self._not_yet_told(users, sender) if users else []
        if news:
            raise MailboxFull(news)

    # Events, in commit order, from every node

    def receive(self, events: list[Any]) -> None:
        """Apply what the nodes committed: announce, deliver, join and leave."""
        with self.batch():
            for event in events:
                kind = event[0]
                if kind == "m":
                    sender = self._users.get(event[1])
                    self._announce(linewire.msg(event[2], event[3]), exclude=sender)
                elif kind == "t":
                    target = self._users.get(event[1])
                    if isinstance(target, LineUser) and target.present:
                        self.send(target.session, linewire.privmsg(event[2], event[3]))
                elif kind == "p":
                    self._announce(linewire.encode(event[1]))
                elif kind == "j":
                    self._joined(*event[1:])
                elif kind == "r":
                    self._renamed(event[1], event[2])
                elif kind == "x":
                    self._gone(event[1])

    def snapshot(self, rows: list[tuple[Any, ...]]) -> None:
        """Catch up with the user list as the database has it, once listening (again)."""
        with self.batch():
            seen = set()
            for seq, name, kind, node, host in rows:
                seen.add(seq)
                user = self._users.get(seq)
                if user is None:
                    self._joined(seq, name, kind, node, host, None)
                elif user.name != name:
                    self._renamed(seq, name)
            for seq in [seq for seq in self._users if seq not in seen]:
                self._gone(seq)

    def drop_local(self) -> None:
        """Stop acting for this node's line users: end their connections."""
        for user in list(self._users.values()):
            if isinstance(user, LineUser) and user.present:
                user.session.end(Ending.NODE_LOST)  # type: ignore[attr-defined]

    # Internals

    def _req(self) -> int:
        return next(self._reqs)

    def _submit(self, kind: Any, user: User | None, *args: Any) -> Deferred[Any]:
        """Submit the op C{kind} about C{user}, whose row's key is its first argument."""
        if self.cut_off:
            return fail(StoreFailed("this node has lost its lease"))
        if user is None:
            return self.engine.submit(kind(*args))
        seq = self._seqs.get(user)
        if seq is None:
            # Taken away by another node while this command was on its way.
            return fail(StoreFailed(f"{user.name} no longer holds its name"))
        return self.engine.submit(kind(seq, *args))

    def _join(self, session: Session | None, op: JoinLine | Register, name: str) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        if self.cut_off:
            return fail(StoreFailed("this node has lost its lease"))
        self._joining[op.req] = (session, d)
        self.engine.submit(op).addCallbacks(
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
                self._claims[seq] = req
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

    def _joined(
        self, seq: int, name: str, kind: str, node: str | None, host: str, req: int | None
    ) -> None:
        if node != self.node:
            # Another node's counter: its requests are not this node's.
            req = None
        if req is None:
            req = self._claims.pop(seq, None)
        else:
            self._claims.pop(seq, None)
        if seq in self._users:
            return
        pending = self._joining.pop(req, None) if req is not None else None
        stale = self._by_name.get(fold(name))
        if stale is not None and stale in self._seqs:
            # Its departure is on its way; the database says the name moved on.
            self._gone(self._seqs[stale])
        user: User
        if kind == "b":
            user = BinaryUser(name, host, seq)
        elif pending is not None and pending[0] is not None:
            user = LineUser(name, pending[0], getattr(pending[0], "host", "local"))
        else:
            user = RemoteUser(name)
        self._users[seq] = user
        self._seqs[user] = seq
        self._add(user)
        if isinstance(user, LineUser):
            if self._batches:
                self._own[user.session] = self._apart.pop(user.session, [])
            self._line_sessions[user.session] = None
        self._announce(linewire.joined(name), exclude=user)
        if pending is not None:
            pending[1].callback((user, True) if kind == "b" else user)

    def _renamed(self, seq: int, new: str) -> None:
        user = self._users.get(seq)
        if user is None or user.name == new:
            return
        old = user.name
        if self._by_name.get(fold(old)) is user:
            del self._by_name[fold(old)]
        user.name = new
        self._by_name[fold(new)] = user
        self._names = None
        self._announce(linewire.renamed(old, new))

    def _gone(self, seq: int) -> None:
        user = self._users.pop(seq, None)
        if user is None:
            return
        del self._seqs[user]
        if self._by_name.get(fold(user.name)) is user:
            del self._by_name[fold(user.name)]
        del self._order[user]
        self._names = None
        if isinstance(user, LineUser) and user.present:
            # Taken away by another node (this one's lease ran out): end it.
            user.present = False
            self._detach(user.session)
            user.session.end(Ending.NODE_LOST)  # type: ignore[attr-defined]
        user.present = False
        if isinstance(user, BinaryUser):
            del self._binary_users[user]
            self._hosts[user.host] -= 1
            if not self._hosts[user.host]:
                del self._hosts[user.host]
        self._announce(linewire.left(user.name))

    def _detach(self, session: Session) -> None:
        """C{session} gets nothing more pushed: its user is leaving."""
        if session not in self._line_sessions:
            return
        if self._batches:
            self._apart[session] = self._own_list(session)
            del self._own[session]
        del self._line_sessions[session]


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

    def __init__(self, hub: ClusterHub, engine: Engine, reactor: Any, lease: float) -> None:
        self.hub = hub
        self.engine = engine
        self.reactor = reactor
        self.lease = lease
        self.listener = Listener(engine.uri, reactor, hub.snapshot, hub.receive)
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
        d = self.engine.submit(Depart(self.hub.node))
        d.addErrback(lambda reason: None)
        d.addBoth(lambda _: self.reactor.callInThread(self.listener.stop))
        return d

    def _renew(self) -> None:
        self._tick = self.reactor.callLater(self.lease * RENEW, self._renew)
        sent = self.reactor.seconds()
        if sent - self._renewed > self.lease * CUT_OFF:
            self._cut_off()
        self.engine.submit(Renew(self.hub.node, self.lease)).addCallbacks(
            self._held, self._failed, (sent,)
        )

    def _held(self, kept: bool, sent: float) -> None:
        first, self._first = self._first, False
        if not kept and not first and not self.hub.cut_off:
            # Another node took this one's users away: they are being ended.
            self.log.warn("this node's lease ran out; its line users were taken away")
        self._renewed = max(self._renewed, sent)
        if self.hub.cut_off:
            self.hub.cut_off = False
            self.log.info("the database is back: this node serves again")

    def _failed(self, reason: Failure) -> None:
        if self.reactor.seconds() - self._renewed > self.lease * CUT_OFF:
            self._cut_off()

    def _cut_off(self) -> None:
        if not self.hub.cut_off:
            self.log.error(
                "no contact with the database for {lease:.1f} s: dropping this node's line users",
                lease=self.lease * CUT_OFF,
            )
            self.hub.cut_off = True
            self.hub.drop_local()


def new_node_id() -> str:
    return uuid.uuid4().hex[:16]
