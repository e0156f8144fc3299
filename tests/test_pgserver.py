"""The test suite's own PostgreSQL: started, restarted and removed for real."""

from __future__ import annotations

import os

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests import pgserver


class PostgresServerTests(SynchronousTestCase):
    def setUp(self) -> None:
        reason = pgserver.unavailable()
        if reason is not None:
            raise SkipTest(reason)

    def test_lifecycle(self) -> None:
        """A server answers on its URI, keeps its data over a restart, and
        leaves no files behind."""
        import psycopg

        server = pgserver.PostgresServer()
        self.addCleanup(server.destroy)
        server.start()
        uri = server.new_database()
        with psycopg.connect(uri, autocommit=True) as db:
            db.execute("CREATE TABLE kept (n int)")
            db.execute("INSERT INTO kept VALUES (7)")
        server.stop()
        self.assertRaises(psycopg.OperationalError, psycopg.connect, uri, connect_timeout=2)
        server.start()
        with psycopg.connect(uri) as db:
            self.assertEqual(db.execute("SELECT n FROM kept").fetchall(), [(7,)])
        server.destroy()
        self.assertFalse(os.path.exists(server.directory))
