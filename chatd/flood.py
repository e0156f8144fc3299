"""Flood control: a burst of commands at once, then a steady rate (fake lag)."""

from __future__ import annotations

from typing import Protocol

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from chatd.rules import Ending, Limits


class TokenBucket:
    """C{rate} tokens a second, holding at most C{burst}, on an injected clock."""

    __slots__ = ("rate", "burst", "clock", "tokens", "stamp")

    def __init__(self, rate: float, burst: int, clock: IReactorTime) -> None:
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self.tokens = float(burst)
        self.stamp = clock.seconds()

    def take(self) -> float:
        """Spend one token; return 0, or the seconds until a whole token is back."""
        now = self.clock.seconds()
        # Comparisons rather than min() and max(): this runs for every command.
        tokens = self.tokens + (now - self.stamp) * self.rate
        if tokens > self.burst:
            tokens = self.burst
        self.stamp = now
        self.tokens = tokens = tokens - 1
        return 0.0 if tokens >= 1 else (1 - tokens) / self.rate


class Pauseable(Protocol):
    """What L{FakeLag} needs of a receiver: one that parses no further while
    C{paused} and keeps what arrives meanwhile, as Twisted's C{basic}
    receivers and chatd's binary protocol do."""

    paused: bool

    def dataReceived(self, data: bytes) -> None: ...

    def end(self, ending: Ending) -> None: ...


class FakeLag:
    """Holds a connection's commands past its burst, parsing on at the command rate.

    Nothing is dropped: input waits in the receiver's buffer. What waits is
    bounded, though: a client that keeps sending while held is flooding.
    """

    __slots__ = ("receiver", "clock", "max_held", "bucket", "_resume")

    def __init__(self, receiver: Pauseable, limits: Limits, clock: IReactorTime) -> None:
        self.receiver = receiver
        self.clock = clock
        self.max_held = limits.max_input_backlog
        self.bucket = TokenBucket(limits.command_rate, limits.command_burst, clock)
        self._resume: IDelayedCall | None = None

    def command(self) -> None:
        """Count one command; past the rate, parse no more until a token is back."""
        wait = self.bucket.take()
        if wait and self._resume is None:
            self.receiver.paused = True
            self._resume = self.clock.callLater(wait, self._go)

    def check(self, held: int) -> None:
        """End a held connection whose unparsed input, C{held} bytes, is over the bound."""
        if self._resume is not None and held > self.max_held:
            self.receiver.end(Ending.FLOOD)

    def holding(self) -> bool:
        """Whether commands the client sent wait for the rate to let them run."""
        return self._resume is not None

    @property
    def last_command(self) -> float:
        """When the last command was counted (run), held or not."""
        return self.bucket.stamp

    def stop(self) -> None:
        if self._resume is not None and self._resume.active():
            self._resume.cancel()
        self._resume = None

    def _go(self) -> None:
        self._resume = None
        self.receiver.paused = False
        self.receiver.dataReceived(b"")
