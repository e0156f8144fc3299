"""Where the binary users and their mail are kept beyond the hub's memory.

The hub holds every user and mailbox in memory and answers from there. A store
is its journal: the hub tells it every change to the binary users and their
mail, in order, and asks it when all changes so far are committed. A binary
client is acknowledged only then, so acknowledged means stored.
"""

from __future__ import annotations

import sqlite3
from functools import partial
from itertools import count, groupby
from operator import itemgetter
from typing import Any, Callable, NamedTuple, Protocol, TypeVar

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorFromThreads, IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from chatd.deadline import cancelled

_T = TypeVar("_T")


class Mail(NamedTuple):
    """A message in a mailbox; its key orders it among all messages."""

    key: int
    sender: str
    text: str


class KeptUser(NamedTuple):
    """A binary user as a store kept it: registered, with its mail oldest first."""

    key: int
    name: str
    host: str
    mail: list[Mail]


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

    def add_mail(self, key: int, sender: str, text: str) -> int:
        """Put a message at the end of a user's mailbox; return the message's key."""

    def remove_mail(self, key: int, upto: int) -> None:
        """Take a user's messages out of its mailbox, up to the one keyed C{upto}."""

    def put_back_mail(self, key: int, mail: list[Mail]) -> None:
        """Put messages back into a user's mailbox, under their own keys."""

    def settled(self) -> bool:
        """Whether every change so far is committed, so nothing need wait."""

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
        self._mail_keys = count(1)

    def load(self) -> list[KeptUser]:
        return []

    def add_user(self, name: str, host: str) -> int:
        return next(self._keys)

    def remove_user(self, key: int) -> None:
        pass

    def add_mail(self, key: int, sender: str, text: str) -> int:
        return next(self._mail_keys)

    def remove_mail(self, key: int, upto: int) -> None:
        pass

    def put_back_mail(self, key: int, mail: list[Mail]) -> None:
        pass

    def settled(self) -> bool:
        return True

    def committed(self) -> Deferred[None]:
        return succeed(None)


class StoreFailed(Exception):
    """Changes could not be committed; they were not acknowledged."""


class Worker(Protocol):
    """Runs database work away from the reactor, one piece at a time, in order."""

    def run(self, work: Callable[[], _T]) -> Deferred[_T]:
        """Run C{work}; the Deferred fires, in the reactor, with its result."""

    def start(self) -> None:
        pass

    def stop(self) -> None:
        """Finish what was handed over, then end."""


class ThreadWorker:
    """One thread for every database call, so SQLite never blocks the reactor."""

    def __init__(self, reactor: IReactorFromThreads) -> None:
        self._reactor = reactor
        self._pool = ThreadPool(minthreads=1, maxthreads=1, name="chatd-store")

    def run(self, work: Callable[[], _T]) -> Deferred[_T]:
        return deferToThreadPool(self._reactor, self._pool, work)

    def start(self) -> None:
        self._pool.start()

    def stop(self) -> None:
        self._pool.stop()


class CommitReport(Protocol):
    """Told of every commit a store tries: how long it took, and its error if it failed."""

    def __call__(self, seconds: float, error: BaseException | None) -> None: ...


_ADD_USER = "INSERT OR REPLACE INTO users (id, name, host) VALUES (?, ?, ?)"
_REMOVE_USER = "DELETE FROM users WHERE id = ?"
_ADD_MAIL = "INSERT OR REPLACE INTO mail (id, receiver, sender, text) VALUES (?, ?, ?, ?)"
_CLEAR_MAIL = "DELETE FROM mail WHERE receiver = ?"
_REMOVE_MAIL = "DELETE FROM mail WHERE receiver = ? AND id <= ?"


def reason(e: BaseException) -> str:
    """An error's first line, fit for a log line or a reply."""
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


class GroupCommit(Service):
    """Group commit, off the reactor: the changes made while a commit is
    under way, or in one turn of the reactor, go to the worker as one
    transaction, and every L{committed} Deferred waiting on them fires after.

    A subclass says what a change is and how a batch of them is committed
    (C{_run}, called in the worker), and what a failed or committed batch
    means for the changes in it (C{_failed}, C{_succeeded}, in the reactor).
    """

    log = Logger()
    # The log line of the first failure in a run of them.
    failing_message = "cannot commit to the database: {reason}"

    def __init__(
        self, clock: IReactorTime, worker: Worker, report: CommitReport | None = None
    ) -> None:
        self._clock = clock
        self._worker = worker
        self._report = report
        self._started = 0.0
        # Changes not yet handed to the worker, and who waits on them.
        self._pending: list[Any] = []
        self._waiting: list[Deferred[None]] = []
        # Who waits on the transaction under way, if there is one.
        self._committing: list[Deferred[None]] | None = None
        self._next: IDelayedCall | None = None
        self._failing = False
        self._closed = False

    def settled(self) -> bool:
        return not self._pending and self._committing is None

    def committed(self) -> Deferred[None]:
        """Fires once every change made so far is committed, or failed."""
        if self._pending:
            waiting = self._waiting
        elif self._committing is not None:
            waiting = self._committing
        else:
            return succeed(None)
        d: Deferred[None] = Deferred()
        waiting.append(d)
        return d

    def startService(self) -> None:
        super().startService()
        self._worker.start()

    def _add(self, change: Any) -> None:
        self._pending.append(change)
        self._schedule(0)

    def _stop_committing(self) -> None:
        self._closed = True
        self._next = cancelled(self._next)

    def _schedule(self, delay: float) -> None:
        if self._next is None and self._committing is None and not self._closed:
            self._next = self._clock.callLater(delay, self._commit)

    def _commit(self) -> None:
        self._next = None
        batch, self._pending = self._pending, []
        self._committing, self._waiting = self._waiting, []
        self._started = self._clock.seconds()
        self._worker.run(partial(self._run, batch)).addBoth(self._done, batch)

    def _run(self, batch: list[Any]) -> Any:
        """In the worker: commit every change of C{batch} in one transaction."""
        raise NotImplementedError

    def _failed(self, batch: list[Any], error: StoreFailed) -> None:
        """C{batch} was not committed: what of it is tried again, who is told."""
        raise NotImplementedError

    def _succeeded(self, batch: list[Any], result: Any) -> None:
        """C{batch} is committed, with what C{_run} returned."""

    def _done(self, result: Any, batch: list[Any]) -> None:
        waiting, self._committing = self._committing or [], None
        error = result.value if isinstance(result, Failure) else None
        if self._report is not None:
            self._report(self._clock.seconds() - self._started, error)
        if error is not None:
            if not self._failing:
                self._failing = True
                self.log.error(self.failing_message, reason=reason(error), retry=self.retry)
            failed = StoreFailed(f"not committed: {reason(error)}")
            self._failed(batch, failed)
            for d in waiting:
                d.errback(Failure(failed))
            return
        if self._failing:
            self._failing = False
            self.log.info("committing to the database again")
        if self._pending:
            self._schedule(0)
        self._succeeded(batch, result)
        for d in waiting:
            d.callback(None)

    # Seconds before a failed batch is tried again.
    retry = 1.0


class SqliteStore(GroupCommit):
    """Keeps the binary users and their mail in an SQLite database.

    Changes are grouped: those made while a commit is under way, or in one
    turn of the reactor, go to the worker as one transaction, and every
    L{committed} Deferred waiting on them fires after it. A transaction that
    fails is rolled back and its changes stay first in line, to be tried again
    with the next ones after C{retry} seconds, so a later acknowledgement
    never stands on an earlier change that is missing.
    """

    failing_message = "cannot commit to the database, trying again every {retry} s: {reason}"

    def __init__(
        self,
        db: sqlite3.Connection,
        clock: IReactorTime,
        worker: Worker,
        report: CommitReport | None = None,
    ) -> None:
        """
        @param db: a connection from L{chatd.database.open_database}; from now
            on only C{worker} uses it.
        @param report: told, in the reactor, of every commit tried (for the
            metrics and the health check).
        """
        super().__init__(clock, worker, report)
        self._db = db
        # Keys go on from the highest kept, so a key never names two rows.
        self._user_keys = count(_highest(db, "users") + 1)
        self._mail_keys = count(_highest(db, "mail") + 1)

    # The Store interface

    def load(self) -> list[KeptUser]:
        users = {
            key: KeptUser(key, name, host, [])
            for key, name, host in self._db.execute(
                "SELECT id, name, host FROM users ORDER BY id"
            )
        }
        for key, receiver, sender, text in self._db.execute(
            "SELECT id, receiver, sender, text FROM mail ORDER BY id"
        ):
            users[receiver].mail.append(Mail(key, sender, text))
        return list(users.values())

    def add_user(self, name: str, host: str) -> int:
        key = next(self._user_keys)
        self._change(_ADD_USER, key, name, host)
        return key

    def remove_user(self, key: int) -> None:
        self._change(_CLEAR_MAIL, key)
        self._change(_REMOVE_USER, key)

    def add_mail(self, key: int, sender: str, text: str) -> int:
        mail_key = next(self._mail_keys)
        self._change(_ADD_MAIL, mail_key, key, sender, text)
        return mail_key

    def remove_mail(self, key: int, upto: int) -> None:
        self._change(_REMOVE_MAIL, key, upto)

    def put_back_mail(self, key: int, mail: list[Mail]) -> None:
        for message in mail:
            self._change(_ADD_MAIL, message.key, key, message.sender, message.text)

    # The service

    def stopService(self) -> Deferred[None]:
        """Commit what is pending, then close the database."""
        super().stopService()
        d = self.committed()
        d.addErrback(
            lambda failure: self.log.error(
                "closing the database with changes that were never stored: {reason}",
                reason=failure.value,
            )
        )
        d.addCallback(lambda _: self._close())
        return d

    def _close(self) -> None:
        self._stop_committing()
        self._worker.stop()
        self._db.close()

    # Group commit

    def _change(self, sql: str, *params: Any) -> None:
        self._add((sql, params))

    def _run(self, batch: list[tuple[str, tuple[Any, ...]]]) -> None:
        """In the worker: every change of C{batch} in one transaction."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for sql, changes in groupby(batch, key=itemgetter(0)):
                self._db.executemany(sql, [params for _, params in changes])
            self._db.execute("COMMIT")
        except BaseException:
            self._db.rollback()
            raise

    def _failed(self, batch: list[tuple[str, tuple[Any, ...]]], error: StoreFailed) -> None:
        # First in line again: a later change never stands on a missing one.
        self._pending[:0] = batch
        self._schedule(self.retry)


def _highest(db: sqlite3.Connection, table: str) -> int:
    (highest,) = db.execute(f"SELECT coalesce(max(id), 0) FROM {table}").fetchone()
    return int(highest)
