"""The time limit a connection runs under: the handshake's, then the idle one."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from chatd.deadline import Deadline


class DeadlineTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.expired: list[float] = []
        self.deadline = Deadline(self.clock, lambda: self.expired.append(self.clock.seconds()))

    def test_expires_after_limit(self) -> None:
        self.deadline.set(10)
        self.clock.advance(9.9)
        self.assertEqual(self.expired, [])
        self.clock.advance(0.1)
        self.assertEqual(self.expired, [10])

    def test_touch_counts_from_the_last_one(self) -> None:
        self.deadline.set(10)
        self.clock.advance(4)
        self.deadline.touch()
        self.clock.advance(9)
        self.deadline.touch()
        self.clock.advance(9.5)
        self.assertEqual(self.expired, [])
        self.clock.advance(0.5)
        self.assertEqual(self.expired, [23])
        # Once expired it stays quiet, touched or not.
        self.deadline.touch()
        self.clock.advance(100)
        self.assertEqual(self.expired, [23])

    def test_late_clock_runs_earlier_calls_first(self) -> None:
        """A touch makes the queued call early; if the clock only gets to it
        after the real deadline, what was due before that deadline still
        runs before the expiry."""
        ran: list[str] = []
        self.deadline.expire = lambda: ran.append("expired")
        self.deadline.set(3)
        self.clock.advance(2.5)
        self.deadline.touch()
        self.clock.callLater(1, ran.append, "due at 3.5")
        self.clock.advance(4)
        self.assertEqual(ran, ["due at 3.5", "expired"])

    def test_many_touches_leave_one_call(self) -> None:
        self.deadline.set(10)
        for _ in range(1000):
            self.clock.advance(0.01)
            self.deadline.touch()
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)

    def test_set_starts_over(self) -> None:
        self.deadline.set(10)
        [call] = self.clock.getDelayedCalls()
        self.clock.advance(8)
        self.deadline.set(5)
        # The call is moved, not replaced: the reactor keeps a cancelled call
        # queued for a while, which for thousands of connections is memory.
        self.assertEqual(self.clock.getDelayedCalls(), [call])
        self.clock.advance(4.9)
        self.assertEqual(self.expired, [])
        self.clock.advance(0.1)
        self.assertEqual(self.expired, [13])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_set_since_an_earlier_time(self) -> None:
        self.clock.advance(10)
        self.deadline.set(5, since=8)
        self.clock.advance(2.9)
        self.assertEqual(self.expired, [])
        self.clock.advance(0.1)
        self.assertEqual(self.expired, [13])
        # A limit already past expires on the clock's next step, not at once.
        self.deadline.set(5, since=1)
        self.assertEqual(self.expired, [13])
        self.clock.advance(0)
        self.assertEqual(self.expired, [13, 13])

    def test_none_and_cancel_never_expire(self) -> None:
        self.deadline.set(None)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.deadline.set(10)
        self.clock.advance(5)
        self.deadline.touch()
        self.clock.advance(5)
        self.deadline.cancel()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(100)
        self.assertEqual(self.expired, [])
