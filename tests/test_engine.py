"""The PostgreSQL engine on a real server: what it does when two nodes' batches deadlock."""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
from twisted.trial.unittest import TestCase

from tests import pgserver
from tests.nodes import require_postgres


class Crossing:
    """An op that takes two locks, the second after a pause: two of them
    taking the same locks the other way round deadlock."""

    claims = ()
    retry = False

    def __init__(self, first: int, second: int) -> None:
        self.first, self.second = first, second

    def run(self, cursor: Any) -> tuple[Any, list[Any]]:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", (self.first,))
        cursor.execute("SELECT pg_sleep(0.3)")
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", (self.second,))
        cursor.execute("INSERT INTO crossed VALUES (%s)", (self.first,))
        return self.first, []


class DeadlockTests(TestCase):
    timeout = 60

    def setUp(self) -> None:
        require_postgres()
        import psycopg

        from chatd import postgres

        self.uri = pgserver.fresh_database()
        with psycopg.connect(self.uri) as db:
            db.execute("CREATE TABLE crossed (first integer)")
        self.engines = [postgres.Engine(self.uri, reactor) for _ in range(2)]
        for engine in self.engines:
            engine.startService()
            self.addCleanup(engine.stopService)

    @inlineCallbacks
    def test_deadlocked_batch_runs_again(self) -> Deferred[None]:
        """Two nodes whose batches deadlock both get their changes committed,
        each once: PostgreSQL rolls one back, and the engine runs it again."""
        import psycopg

        results = yield gatherResults(
            [self.engines[0].submit(Crossing(1, 2)), self.engines[1].submit(Crossing(2, 1))]
        )
        self.assertEqual(sorted(results), [1, 2])
        with psycopg.connect(self.uri) as db:
            rows = db.execute("SELECT first FROM crossed ORDER BY first").fetchall()
        self.assertEqual(rows, [(1,), (2,)])


class ListenerTests(TestCase):
    def test_events_handed_over_once(self) -> None:
        """Each payload's events are handed over once, however often the
        payload comes (a notification, then the same again when catching
        up); a payload without an id (an older node's) is taken as it comes."""
        from chatd.postgres import Listener

        listener = Listener("postgresql://unused", reactor, lambda rows: None, lambda ev: None)
        first = listener._fresh(['7 [["m",1,"bob","hi there"]]', '8 [["x",2]]'])
        again = listener._fresh(['8 [["x",2]]', '9 [["p","bob poked you"]]'])
        old = listener._fresh(['[["m",1,"bob","an old node"]]'])
        self.assertEqual(first, [["m", 1, "bob", "hi there"], ["x", 2]])
        self.assertEqual(again, [["p", "bob poked you"]])
        self.assertEqual(old, [["m", 1, "bob", "an old node"]])


class PruneTests(TestCase):
    timeout = 60

    def test_events_forgotten_under_steady_traffic(self) -> None:
        """The events kept for catching up are deleted once old, even while
        notifications never stop coming."""
        require_postgres()
        import threading
        import time

        import psycopg

        from chatd import postgres

        uri = pgserver.fresh_database()
        postgres.prepare(uri)
        with psycopg.connect(uri, autocommit=True) as db:
            db.execute(
                "INSERT INTO chatd_events (at, payload) VALUES (now() - interval '1 hour', '[]')"
            )
        self.patch(postgres, "KEEP_EVENTS", 4)
        listener = postgres.Listener(uri, reactor, lambda rows: None, lambda events: None)
        stop = threading.Event()

        def notify() -> None:
            with psycopg.connect(uri, autocommit=True) as db:
                n = 0
                while not stop.is_set():
                    n += 1
                    db.execute("SELECT pg_notify('chatd', %s)", (f'{n} [["p", "{n}"]]',))
                    time.sleep(0.05)

        sender = threading.Thread(target=notify)
        sender.start()
        listener.start()
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                with psycopg.connect(uri) as db:
                    (old,) = db.execute(
                        "SELECT count(*) FROM chatd_events WHERE at < now() - interval '1 minute'"
                    ).fetchone()
                if not old:
                    break
                time.sleep(0.2)
            self.assertEqual(old, 0)
        finally:
            stop.set()
            sender.join()
            listener.stop()
