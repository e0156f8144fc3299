"""A connection's time limit: so many seconds to do something, or to say anything."""

from __future__ import annotations

from typing import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime


def cancelled(call: IDelayedCall | None) -> None:
    """Cancel C{call} if it is still to come; None, to put where it was kept.

    C{self._call = cancelled(self._call)}: a call that ran or was cancelled
    already must not be cancelled again (Twisted raises), and one that is
    kept after it ran would keep its closure alive.
    """
    if call is not None and call.active():
        call.cancel()
    return None


class Deadline:
    """Calls C{expire} once C{limit} seconds pass with no L{touch}.

    Twisted's C{TimeoutMixin} resets a delayed call on every read; this only
    notes the time of the last touch, so the queued call keeps the time it
    was set for, which a touch since has made early. When it comes due it is
    put off to the real deadline. A busy connection's reads then cost a
    clock reading each, not a reschedule.
    """

    __slots__ = ("clock", "expire", "limit", "_last", "_call", "_at")

    def __init__(self, clock: IReactorTime, expire: Callable[[], None]) -> None:
        self.clock = clock
        self.expire = expire
        self.limit: float | None = None
        self._last = 0.0
        self._call: IDelayedCall | None = None
        # When the queued call is due: the deadline as of its last setting.
        self._at = 0.0

    def set(self, limit: float | None, since: float | None = None) -> None:
        """Start over: C{limit} seconds from C{since} (default now), or never if None."""
        if limit is None:
            self.cancel()
            return
        now = self.clock.seconds()
        self.limit = limit
        self._last = now if since is None else since
        self._at = self._last + limit
        delay = max(0.0, self._at - now)
        if self._call is not None and self._call.active():
            # A cancelled call stays in the reactor's queue for a while: with
            # thousands of connections that is memory, so move this one.
            self._call.reset(delay)
        else:
            self._call = self.clock.callLater(delay, self._due)

    def touch(self) -> None:
        """A sign of life: the limit counts from now."""
        self._last = self.clock.seconds()

    def cancel(self) -> None:
        self._call = cancelled(self._call)
        self.limit = None

    def _due(self) -> None:
        self._call = None
        assert self.limit is not None
        if self._last + self.limit > self._at:
            # Touched since the call was set. Even if the real deadline has
            # passed too (a reactor running late), go behind what was due
            # before it, as a held command's turn: calls run in time order.
            self.set(self.limit, since=self._last)
            return
        self.limit = None
        self.expire()
