"""PostgreSQL behind C{--database postgresql://...}: the engine every node shares.

Two connections per node, each used by one thread of its own, so psycopg's
blocking calls never run on the reactor:

 - L{Engine} runs the node's changes. What one turn of the reactor hands it
   crosses as one transaction, with the events the other nodes must see sent
   by C{NOTIFY} in as few payloads as fit, and every caller's Deferred fires
   once that transaction is committed (or failed: nothing of it was stored).
 - L{Listener} C{LISTEN}s for those events and hands them to the reactor in
   the order PostgreSQL delivers them, which is the order of the commits,
   the same on every node. Each time it connects it first reads the user
   list afresh, so a node that was cut off catches up.

Threads rather than psycopg's asyncio API: chatd runs on any reactor, and a
dedicated thread with a plain connection is how C{SqliteStore} already keeps
SQLite off the reactor.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import deque
from typing import Any, Callable, Iterable, Protocol, Sequence

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from chatd.store import CommitReport, GroupCommit, StoreFailed, ThreadWorker, reason

CHANNEL = "chatd"
# PostgreSQL's limit on a NOTIFY payload is 8000 bytes; room to spare.
PAYLOAD = 7500
# Seconds to wait for a connection before calling the database unreachable.
CONNECT_TIMEOUT = 3
SCHEMA_VERSION = 1
# Seconds the events stay in chatd_events for a node that lost its LISTEN
# connection to catch up from: well beyond --node-lease, past which a node
# that cannot reach the database stops serving anyway.
KEEP_EVENTS = 60
# Ids are taken when a transaction runs and seen in the order of the
# commits: catching up reads from this many ids before the highest seen, so
# that one taken earlier and committed later is not missed.
CATCH_UP_SPAN = 1000
# How often a batch is tried when PostgreSQL picks it to break a deadlock.
DEADLOCK_TRIES = 3

SCHEMA = """
CREATE TABLE IF NOT EXISTS chatd_version (version integer NOT NULL);
-- Every user of every node, in order of arrival (seq). Line users belong to
-- the node they are connected to; binary users to none, since they outlive
-- their connections.
CREATE TABLE IF NOT EXISTS chatd_users (
    seq bigserial PRIMARY KEY,
    folded text NOT NULL UNIQUE,
    name text NOT NULL,
    kind char(1) NOT NULL,      -- 'l' line, 'b' binary
    node text,                  -- the node of a line user
    host text NOT NULL          -- the peer host that may claim a binary name back
);
CREATE TABLE IF NOT EXISTS chatd_mail (
    id bigserial PRIMARY KEY,
    receiver bigint NOT NULL REFERENCES chatd_users (seq) ON DELETE CASCADE,
    sender text NOT NULL,
    sender_key text NOT NULL,   -- the sender's folded name: its share of the mailbox
    text text NOT NULL
);
-- The sender's peer host: its share of the mailbox, under all its names.
ALTER TABLE chatd_mail ADD COLUMN IF NOT EXISTS sender_host text NOT NULL DEFAULT '';
CREATE INDEX IF NOT EXISTS chatd_mail_by_receiver ON chatd_mail (receiver, id);
-- One row a live node, renewed well inside its lease.
-- What each transaction NOTIFYed, kept for a while: a node whose LISTEN
-- connection dropped reads what it missed from here. Unlogged: a
-- transaction that only announces (a line message) then commits without
-- waiting for the disk, as it did before this table; a crash of PostgreSQL
-- empties it.
CREATE UNLOGGED TABLE IF NOT EXISTS chatd_events (
    id bigserial PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT now(),
    payload text NOT NULL
);
ALTER TABLE chatd_events SET UNLOGGED;
CREATE INDEX IF NOT EXISTS chatd_events_by_time ON chatd_events (at);
CREATE TABLE IF NOT EXISTS chatd_nodes (
    id text PRIMARY KEY,
    lease double precision NOT NULL,
    renewed timestamptz NOT NULL DEFAULT now()
);
"""

# Taken while the schema is made, so two nodes starting at once do not race.
_SCHEMA_LOCK = 0x63686174


class UnusableDatabase(Exception):
    """The PostgreSQL database cannot be used; the text says why."""


def is_postgres(database: str) -> bool:
    return database.startswith(("postgresql://", "postgres://"))


def connect(uri: str, **options: Any) -> Any:
    import psycopg

    return psycopg.connect(uri, connect_timeout=CONNECT_TIMEOUT, **options)


def prepare(uri: str) -> None:
    """Create or check the schema; raise L{UnusableDatabase} with a reason."""
    try:
        import psycopg
    except ImportError:
        raise UnusableDatabase(
            "--database postgresql://... needs psycopg: pip install 'chatd[postgresql]'"
        )
    try:
        with connect(uri) as db:
            db.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            db.execute(SCHEMA)
            row = db.execute("SELECT version FROM chatd_version").fetchone()
            if row is None:
                db.execute("INSERT INTO chatd_version VALUES (%s)", (SCHEMA_VERSION,))
            elif row[0] > SCHEMA_VERSION:
                raise UnusableDatabase(
                    f"the database has schema version {row[0]}; this chatd knows "
                    f"versions up to {SCHEMA_VERSION}"
                )
    except psycopg.Error as e:
        raise UnusableDatabase(f"cannot use database {redact(uri)}: {reason(e)}") from e


USERS = "SELECT seq, name, kind, node, host FROM chatd_users ORDER BY seq"


def load_users(uri: str) -> list[tuple[Any, ...]]:
    """Every user of every node, in order of arrival: read once at start, blocking."""
    import psycopg

    try:
        with connect(uri) as db:
            return list(db.execute(USERS).fetchall())
    except psycopg.Error as e:
        raise UnusableDatabase(f"cannot use database {redact(uri)}: {reason(e)}") from e


def redact(uri: str) -> str:
    """C{uri} without its password, fit for a log."""
    head, at, tail = uri.rpartition("@")
    if not at or ":" not in head.split("//", 1)[-1]:
        return uri
    scheme, _, credentials = head.partition("//")
    return f"{scheme}//{credentials.split(':', 1)[0]}:***@{tail}"


class _NotBegun(Exception):
    """The transaction could not even begin: nothing of it reached the database."""


class Op(Protocol):
    """One change, run in the engine's thread inside the batch's transaction."""

    # Names (folded) this change claims: locked, in one order, before any change.
    claims: Sequence[str]
    # Whether a change that failed is tried again with the next batch rather
    # than reported: one nobody waits on, such as a departure.
    retry: bool

    def run(self, cursor: Any) -> tuple[Any, list[Any]]:
        """Do it; return its result for the reactor and the events it sends.

        An op may instead have C{start(db)}, which sends its statement on a
        cursor of its own and returns it, and C{finish(cursor)}, which reads
        the result: those of a batch share one round trip. Or a
        C{run_many(cursor, ops)} that does a run of ops of its kind in one
        statement, returning an outcome (result, events) for each.
        """


class Engine(GroupCommit):
    """Runs changes on PostgreSQL in batches, one transaction a turn, off the reactor.

    A change is an L{Op} and the Deferred that gets its result.
    """

    def __init__(
        self, uri: str, reactor: IReactorTime, report: CommitReport | None = None
    ) -> None:
        """
        @param report: told, in the reactor, of every commit tried (for the
            metrics and the health check).
        """
        super().__init__(reactor, ThreadWorker(reactor), report)  # type: ignore[arg-type]
        self.uri = uri
        self._db: Any = None

    def submit(self, op: Op) -> Deferred[Any]:
        """Run C{op} with the next batch; fires with its result once committed."""
        d: Deferred[Any] = Deferred()
        self._add((op, d))
        return d

    def stopService(self) -> Deferred[None]:
        super().stopService()
        d = self.committed()
        d.addBoth(lambda _: self._close())
        return d

    def _close(self) -> None:
        self._stop_committing()
        self._worker.run(self._disconnect)
        self._worker.stop()

    def _run(self, batch: list[tuple[Op, Deferred[Any]]]) -> list[Any]:
        """In the worker: every op in one transaction, its events notified."""
        import psycopg

        ops = [op for op, _ in batch]
        fresh = self._db is None or self._db.closed
        if fresh:
            self._db = connect(self.uri)
        try:
            return self._transaction_again(ops)
        except _NotBegun:
            if fresh:
                raise
            # The connection died while idle (a database restart) and nothing
            # was sent: once more, on a new one.
            self._db = connect(self.uri)
            return self._transaction(ops)
        except psycopg.Error:
            if self._db.broken or self._db.closed:
                self._disconnect()
            raise

    def _transaction_again(self, ops: list[Op]) -> list[Any]:
        """L{_transaction}, run again when PostgreSQL rolled it back to break
        a deadlock with another node's batch: nothing of it was stored, and
        the next try usually goes through."""
        import psycopg.errors

        for _ in range(DEADLOCK_TRIES - 1):
            try:
                return self._transaction(ops)
            except (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure):
                # PostgreSQL's own log names the deadlock.
                continue
        return self._transaction(ops)

    def _transaction(self, ops: list[Op]) -> list[Any]:
        import psycopg

        db = self._db
        try:
            transaction = db.transaction()
            transaction.__enter__()
        except psycopg.OperationalError as e:
            self._disconnect()
            raise _NotBegun(reason(e)) from e
        try:
            cursor = db.cursor()
            claims = sorted({_lock_key(name) for op in ops for name in op.claims})
            if claims:
                # All at once and in one order: two batches never deadlock.
                cursor.execute(
                    "SELECT count(pg_advisory_xact_lock(k)) FROM"
                    " (SELECT k FROM unnest(%s::bigint[]) AS k ORDER BY k) AS s",
                    (claims,),
                )
            # Pipelined: the statements of ops that can wait for their
            # results go out together, one round trip for all of them.
            with db.pipeline():
                outcomes = _outcomes(db, cursor, ops)
                results, events = [], []
                for op, outcome in zip(ops, outcomes):
                    finish = getattr(op, "finish", None)
                    result, sent = finish(outcome) if finish is not None else outcome
                    results.append(result)
                    events.extend(sent)
                chunks = payloads(events)
                if chunks:
                    cursor.execute(_NOTIFY, {"channel": CHANNEL, "chunks": chunks})
        except BaseException as e:
            transaction.__exit__(type(e), e, e.__traceback__)
            raise
        transaction.__exit__(None, None, None)
        return results

    def _disconnect(self) -> None:
        if self._db is not None:
            try:
                self._db.close()
            except Exception:
                pass
            self._db = None

    def _failed(self, batch: list[tuple[Op, Deferred[Any]]], error: StoreFailed) -> None:
        # A change nobody waits on is tried again; the others are refused.
        again = [(op, d) for op, d in batch if op.retry]
        self._pending[:0] = again
        if self._pending:
            self._schedule(self.retry if again else 0)
        for op, d in batch:
            if not op.retry:
                d.errback(Failure(error))

    def _succeeded(self, batch: list[tuple[Op, Deferred[Any]]], result: list[Any]) -> None:
        for (_, d), value in zip(batch, result):
            d.callback(value)


def _outcomes(db: Any, cursor: Any, ops: list[Op]) -> list[Any]:
    """Send every op's statements, in order: a run of ops of one kind that
    can be one statement (C{run_many}) is one; ops with C{start} are
    pipelined, to be finished once all are sent."""
    outcomes: list[Any] = []
    i = 0
    while i < len(ops):
        op = ops[i]
        many = getattr(op, "run_many", None)
        if many is not None:
            j = i + 1
            while j < len(ops) and type(ops[j]) is type(op):
                j += 1
            outcomes.extend(many(cursor, ops[i:j]))
            i = j
            continue
        start = getattr(op, "start", None)
        outcomes.append(start(db) if start is not None else op.run(cursor))
        i += 1
    return outcomes


# The events, kept and sent in one statement: each payload is its row's id,
# a space, and the JSON array of events.
_NOTIFY = """
WITH kept AS (
    INSERT INTO chatd_events (payload)
    SELECT p FROM unnest(%(chunks)s::text[]) WITH ORDINALITY AS c(p, o) ORDER BY o
    RETURNING id, payload
)
SELECT count(pg_notify(%(channel)s, id::text || ' ' || payload))
FROM (SELECT id, payload FROM kept ORDER BY id) AS k
"""


def _lock_key(folded: str) -> int:
    import zlib

    return zlib.crc32(folded.encode("utf-8"))


def payloads(events: Iterable[Any]) -> list[str]:
    """The events as JSON arrays of at most L{PAYLOAD} bytes each."""
    out: list[str] = []
    chunk: list[str] = []
    size = 2
    for event in events:
        encoded = json.dumps(event, ensure_ascii=False, separators=(",", ":"))
        n = len(encoded.encode("utf-8")) + 1
        if chunk and size + n > PAYLOAD:
            out.append("[" + ",".join(chunk) + "]")
            chunk, size = [], 2
        chunk.append(encoded)
        size += n
    if chunk:
        out.append("[" + ",".join(chunk) + "]")
    return out


class Listener:
    """A thread that C{LISTEN}s for the nodes' events, reconnecting for ever.

    On each connection it calls C{snapshot(rows)} with the user list as it is
    once listening, then C{events(list)} for every notification, in order,
    all in the reactor's thread. Connected again after a drop, it first
    hands over the events committed meanwhile (kept in C{chatd_events} for
    L{KEEP_EVENTS} seconds), each once, then the user list.
    """

    log = Logger()

    def __init__(
        self,
        uri: str,
        reactor: IReactorFromThreads,
        snapshot: Callable[[list[tuple[Any, ...]]], None],
        events: Callable[[list[Any]], None],
    ) -> None:
        self.uri = uri
        self._reactor = reactor
        self._snapshot = snapshot
        self._events = events
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chatd-listen", daemon=True)
        self._seen = _Seen()
        # Events up to this id were committed before this node first listened.
        self._floor: int | None = None
        self._pruned = 0.0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(CONNECT_TIMEOUT + 2)

    def _run(self) -> None:
        delay = 0.1
        while not self._stopping.is_set():
            try:
                self._listen()
                delay = 0.1
            except Exception as e:
                self._reactor.callFromThread(
                    self.log.warn, "listening to the database: {reason}", reason=reason(e)
                )
            # Capped backoff: back within a second of the database.
            self._stopping.wait(delay)
            delay = min(delay * 2, 1.0)

    def _listen(self) -> None:
        # Named, so that an operator (or a test) can tell it in pg_stat_activity.
        with connect(self.uri, application_name=f"chatd-listen-{os.getpid()}") as db:
            db.autocommit = True
            db.execute(f"LISTEN {CHANNEL}")
            if self._floor is None:
                (self._floor,) = db.execute("SELECT coalesce(max(id), 0) FROM chatd_events").fetchone()
            else:
                missed = self._missed(db)
                if missed:
                    self._reactor.callFromThread(self._events, missed)
            rows = db.execute(USERS).fetchall()
            self._reactor.callFromThread(self._snapshot, rows)
            while not self._stopping.is_set():
                # The first notification, and any that came in the same read.
                events = self._fresh(
                    (n.payload for n in db.notifies(timeout=0.5, stop_after=1))
                )
                # Busy or quiet: under steady traffic there is no quiet moment.
                self._prune(db)
                if events:
                    self._reactor.callFromThread(self._events, events)
                    continue
                # A notifies() generator that ends with a timeout may hide a
                # dropped connection: ask it.
                db.execute("SELECT 1")

    def _missed(self, db: Any) -> list[Any]:
        """The events committed since this node last heard, not yet handed over."""
        after = max(self._floor or 0, self._seen.highest - CATCH_UP_SPAN)
        rows = db.execute(
            "SELECT id::text || ' ' || payload FROM chatd_events WHERE id > %s ORDER BY id",
            (after,),
        ).fetchall()
        return self._fresh(row[0] for row in rows)

    def _fresh(self, payloads: Iterable[str]) -> list[Any]:
        """The events of C{payloads} not handed over before, in order."""
        events: list[Any] = []
        for payload in payloads:
            head, _, body = payload.partition(" ")
            if not head.isdigit():
                # Without an id (a node of an older chatd): as it comes.
                events.extend(json.loads(payload))
            elif self._seen.add(int(head)):
                events.extend(json.loads(body))
        return events

    def _prune(self, db: Any) -> None:
        """Forget events older than L{KEEP_EVENTS}, now and then."""
        now = time.monotonic()
        if now - self._pruned < KEEP_EVENTS / 4:
            return
        self._pruned = now
        db.execute(
            "DELETE FROM chatd_events WHERE at < now() - make_interval(secs => %s)",
            (KEEP_EVENTS,),
        )


class _Seen:
    """The ids of the events handed over lately: a bounded set."""

    def __init__(self, size: int = 4 * CATCH_UP_SPAN) -> None:
        self._order: deque[int] = deque()
        self._ids: set[int] = set()
        self._size = size
        self.highest = 0

    def add(self, id: int) -> bool:
        """Note C{id}; whether it is new."""
        if id in self._ids:
            return False
        self._ids.add(id)
        self._order.append(id)
        if len(self._order) > self._size:
            self._ids.discard(self._order.popleft())
        self.highest = max(self.highest, id)
        return True
