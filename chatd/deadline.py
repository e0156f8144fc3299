"""A connection's time limit: so many seconds to do something, or to say anything."""

from __future__ import annotations

from typing import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime


class Deadline:
    """Calls C{expire} once C{limit} seconds pass with no L{touch}.

    Twisted's C{TimeoutMixin} resets a delayed call on every read; this only
    notes the time of the last touch, and the call, when it comes due early,
    is put off to the real deadline. A busy connection's reads then cost a
    clock reading each, not a reschedule.
    """

    __slots__ = ("clock", "expire", "limit", "_last", "_call")

    def __init__(self, clock: IReactorTime, expire: Callable[[], None]) -> None:
        self.clock = clock
        self.expire = expire
        self.limit: float | None = None
        self._last = 0.0
        self._call: IDelayedCall | None = None

    def set(self, limit: float | None) -> None:
        """Start over: C{limit} seconds from now, or never if None."""
        if limit is None:
            self.cancel()
            return
        self.limit = limit
        self._last = self.clock.seconds()
        if self._call is not None and self._call.active():
            # A cancelled call stays in the reactor's queue for a while: with
            # thousands of connections that is memory, so move this one.
            self._call.reset(limit)
        else:
            self._call = self.clock.callLater(limit, self._due)

    def touch(self) -> None:
        """A sign of life: the limit counts from now."""
        self._last = self.clock.seconds()

    def cancel(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        self.limit = None

    def _due(self) -> None:
        self._call = None
        assert self.limit is not None
        left = self._last + self.limit - self.clock.seconds()
        if left > 0:
            self._call = self.clock.callLater(left, self._due)
            return
        self.limit = None
        self.expire()
