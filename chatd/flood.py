"""Flood control: a burst of commands at once, then a steady rate (fake lag).

Each connection has its own command budget; broadcasts also draw on their
peer host's budget (L{HostBudgets}), which outlives the host's connections:
a flooder gains nothing by reconnecting or by opening more of them.
"""

from __future__ import annotations

from typing import Protocol, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from chatd.deadline import cancelled
from chatd.rules import Ending, Limits

_T = TypeVar("_T")


class Later(Exception):
    """Raised by a command the flood limit puts off: it is run again, first,
    once the limit lets it (see L{FakeLag.may_broadcast})."""


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

    def take_whole(self) -> float:
        """Spend a token only if a whole one is there, and return 0; else
        spend nothing, and return the seconds until one is: never overdrawn."""
        now = self.clock.seconds()
        tokens = self.tokens + (now - self.stamp) * self.rate
        if tokens < 1:
            return (1 - tokens) / self.rate
        self.tokens = min(tokens, self.burst) - 1
        self.stamp = now
        return 0.0

    def full(self) -> bool:
        """Whether the bucket has refilled: it is then as good as a new one."""
        return self.tokens + (self.clock.seconds() - self.stamp) * self.rate >= self.burst


class HostBudgets:
    """One L{TokenBucket} per peer host, shared by all its connections.

    A host's bucket is kept while it is refilling, whether or not the host
    is still connected; a full one is forgotten, since a new one is the same.
    What is kept is so bounded by the hosts that spent some of their budget
    in the last C{burst / rate} seconds (plus what their held connections owe).
    """

    def __init__(self, rate: float, burst: int, clock: IReactorTime) -> None:
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self._buckets: dict[str, TokenBucket] = {}
        self._prune_at = _FIRST_PRUNE

    def spend(self, host: str) -> float:
        """Spend one of C{host}'s tokens if it has a whole one, and return 0;
        else spend nothing, and return the seconds until it has one.

        Unlike a connection's own budget, this one is never overdrawn: the
        host's connections, however many, get no more than the budget.
        """
        bucket = self._buckets.get(host)
        if bucket is None:
            if len(self._buckets) >= self._prune_at:
                self._prune()
            bucket = self._buckets[host] = TokenBucket(self.rate, self.burst, self.clock)
        return bucket.take_whole()

    def __len__(self) -> int:
        return len(self._buckets)

    def _prune(self) -> None:
        self._buckets = {h: b for h, b in self._buckets.items() if not b.full()}
        # Amortised: the next prune waits until as many hosts again have come.
        self._prune_at = max(_FIRST_PRUNE, 2 * len(self._buckets))


_FIRST_PRUNE = 256


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
    The same hold keeps what a client sends after a command whose answer
    is still to come (L{hold_until}).
    """

    __slots__ = (
        "receiver", "clock", "max_held", "bucket", "hosts", "host", "_resume", "_waiting",
        "_stopped",
    )

    def __init__(
        self,
        receiver: Pauseable,
        limits: Limits,
        clock: IReactorTime,
        hosts: HostBudgets | None = None,
        host: str = "local",
    ) -> None:
        """
        @param hosts: the broadcast budgets of every peer host; without it
            (a connection made on its own), this connection's host has its own.
        """
        self.receiver = receiver
        self.clock = clock
        self.max_held = limits.max_input_backlog
        self.bucket = TokenBucket(limits.command_rate, limits.command_burst, clock)
        if hosts is None:
            hosts = HostBudgets(limits.broadcast_rate, limits.broadcast_burst, clock)
        self.hosts = hosts
        self.host = host
        self._resume: IDelayedCall | None = None
        # Answers held for (see hold_until), and whether the connection is done.
        self._waiting = 0
        self._stopped = False

    def command(self) -> None:
        """Count one command; past the rate, parse no more until a token is back."""
        wait = self.bucket.take()
        if wait and self._resume is None:
            self._hold(wait)

    def may_broadcast(self) -> bool:
        """Whether the host's budget lets a broadcast run now; if not, this
        connection parses nothing more until it does, and the broadcast is to
        be run again then."""
        wait = self.hosts.spend(self.host)
        if wait:
            # It is counted again when it runs: once is its due.
            self.bucket.tokens += 1
            self._hold(wait)
        return not wait

    def _hold(self, wait: float) -> None:
        """Parse no more for C{wait} seconds, or until a hold already longer ends."""
        self.receiver.paused = True
        if self._resume is None:
            self._resume = self.clock.callLater(wait, self._go)
        elif self._resume.getTime() < self.clock.seconds() + wait:
            self._resume.reset(wait)

    def hold_until(self, answer: Deferred[_T]) -> Deferred[_T]:
        """Parse no more until C{answer} fires and its callbacks so far have
        run: with several nodes, what follows a C{!nick} or C{register}
        waits until the database has decided the name."""
        self._waiting += 1
        self.receiver.paused = True
        return answer.addBoth(self._answered)

    def check(self, held: int) -> None:
        """End a held connection whose unparsed input, C{held} bytes, is over the bound."""
        if self.holding() and held > self.max_held:
            self.receiver.end(Ending.FLOOD)

    def holding(self) -> bool:
        """Whether commands the client sent wait: for the rate to let them
        run, or for an answer to come."""
        return self._resume is not None or self._waiting > 0

    @property
    def last_command(self) -> float:
        """When the last command was counted (run), held or not."""
        return self.bucket.stamp

    def stop(self) -> None:
        """The connection is closing or gone: never parse on."""
        self._stopped = True
        self._resume = cancelled(self._resume)

    def _answered(self, result: _T) -> _T:
        self._waiting -= 1
        self._go_on()
        return result

    def _go(self) -> None:
        self._resume = None
        self._go_on()

    def _go_on(self) -> None:
        """Parse on, unless something still holds the connection."""
        if self._stopped or self.holding():
            return
        self.receiver.paused = False
        self.receiver.dataReceived(b"")
