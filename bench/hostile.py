"""Honest chat under hostile load: does chatd keep serving everyone else?

Starts chatd from this checkout under twistd as a child process on a
loopback port, then runs two phases of the same honest traffic, each
--seconds long: alone, then alongside a second child process that throws
garbage, floods, non-readers, silent sockets and connect/close churn at
the server. Prints, for each phase, honest deliveries expected and
received, honest latency, and the server's peak RSS.

    python3 bench/hostile.py [--seconds 10] [--nice 19] [-- extra chatd options]

Honest line users broadcast (!sendmsg) every 2 x --interval seconds;
honest binary users alternate 'sendall' and 'receive' every --interval
seconds, so each polls its mailbox about once a second. Every honest
broadcast is owed to every other honest user, line and binary: the report
shows, per receiver kind, what was owed, what arrived (once), what came
twice, what was refused with a notice to its sender, and what was lost.
Latency is measured from send to the line recipient's !msg (push), and
for binary users from command to reply (round trip). Every client binds
its own loopback source address (127.0.0.0/8 is all local), so honest
users are not counted against the hostile hosts' per-host limits.

The attack (KINDS): three line clients flooding !sendmsg at the default
flood limit, each from its own address and reconnecting when cut off; 96
binary registrations that are then abandoned (their mailboxes fill and
are never read); garbage; slowloris; connect/close churn; silent sockets.
--heavy adds binary 'users' floods and clients that never read.

The attack runs at --nice 19 by default: real attackers are on other
machines, and on a small box an attack generator at full priority takes
the CPU from the server and the honest clients directly, which says more
about the box than about chatd. --nice 0 measures that too.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

from twisted.internet import reactor, task
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure

CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOST = "127.0.0.1"


def frame(payload: bytes) -> bytes:
    return struct.pack("<I", len(payload)) + payload


def command(*parts: bytes) -> bytes:
    return b"".join(frame(part) for part in parts)


def endpoint(port: int, source: str) -> TCP4ClientEndpoint:
    return TCP4ClientEndpoint(reactor, HOST, port, bindAddress=(source, 0))


def sleep(seconds: float) -> Deferred[None]:
    return task.deferLater(reactor, seconds, lambda: None)  # type: ignore[arg-type]


# Honest traffic


@dataclass
class Tally:
    """What honest clients sent, and what arrived where, in one phase."""

    names: list[str]
    sent: dict[str, tuple[float, str]] = field(default_factory=dict)  # id -> time, sender
    # (receiver, message id) pairs: arrived, how often, and refused with notice.
    arrived: Counter[tuple[str, str]] = field(default_factory=Counter)
    refused: set[tuple[str, str]] = field(default_factory=set)
    push_latency: list[float] = field(default_factory=list)
    round_trip: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    counting: bool = True

    def send(self, mid: str, sender: str) -> None:
        if self.counting:
            self.sent[mid] = (reactor.seconds(), sender)  # type: ignore[attr-defined]

    def deliver(self, receiver: str, mid: str, push: bool) -> None:
        if mid not in self.sent:
            return
        self.arrived[receiver, mid] += 1
        if push and self.arrived[receiver, mid] == 1:
            self.push_latency.append(reactor.seconds() - self.sent[mid][0])  # type: ignore[attr-defined]

    def refuse(self, receivers: list[str], mid: str) -> None:
        if mid in self.sent:
            self.refused.update((name, mid) for name in receivers if name in self.names)

    def by_kind(self, prefix: str) -> tuple[int, int, int, int, int]:
        """Owed, arrived, twice or more, refused with notice, lost: to receivers named C{prefix}*."""
        receivers = [n for n in self.names if n.startswith(prefix)]
        owed = arrived = twice = refused = 0
        for mid, (_, sender) in self.sent.items():
            for receiver in receivers:
                if receiver == sender:
                    continue
                owed += 1
                times = self.arrived[receiver, mid]
                arrived += times > 0
                twice += times > 1
                refused += times == 0 and (receiver, mid) in self.refused
        return owed, arrived, twice, refused, owed - arrived - refused


class Honest(Protocol):
    """Base of the honest clients: a name, a tally, a pace."""

    def __init__(self, name: str, bench: Bench) -> None:
        self.name = name
        self.bench = bench
        self.buffer = b""
        self.ready: Deferred[None] = Deferred()
        self.lost = False

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.lost = True
        self.bench.tally.errors[f"{self.name} disconnected"] += 1

    def next_id(self) -> str:
        return f"{self.name}.{self.bench.next_serial()}"


class HonestLine(Honest):
    # The last !sendmsg: a mailbox-full error answers it, since !sendmsg
    # has no other answer and the next is a whole interval away.
    last = ""
    ticks = 0

    def connectionMade(self) -> None:
        self.transport.write(f"!nick {self.name}\n".encode())  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        for line in lines:
            self.line(line.decode("utf-8", "replace"))

    def line(self, line: str) -> None:
        words = line.split()
        if words[:1] == ["!users"] and not self.ready.called:
            self.ready.callback(None)
        elif words[:1] == ["!msg"] and len(words) == 3:
            self.bench.tally.deliver(self.name, words[2], push=True)
        elif words[:2] == ["!error", "mailbox-full"]:
            names = line.split(":", 1)[1].split() if ":" in line else []
            self.bench.tally.refuse(names, self.last)
        elif words[:1] == ["!error"]:
            self.bench.tally.errors[" ".join(words[:2])] += 1

    def tick(self) -> None:
        # Every other tick: one broadcast each 2 x --interval.
        self.ticks += 1
        if self.ticks % 2:
            return
        mid = self.next_id()
        self.bench.tally.send(mid, self.name)
        self.last = mid
        self.transport.write(f"!sendmsg {mid}\n".encode())  # type: ignore[union-attr]


FULL = re.compile(rb"^Message added to storage, but mailboxes of (.*) are full!$")


class HonestBinary(Honest):
    """A request-reply client: one command in flight at a time."""

    def __init__(self, name: str, bench: Bench) -> None:
        super().__init__(name, bench)
        self.frames: list[bytes] = []
        self.waiting: list[tuple[str, float, Callable[[list[bytes]], None]]] = []
        self.flip = False

    def connectionMade(self) -> None:
        self.request("register", command(b"register", self.name.encode()), self.registered)

    def registered(self, reply: list[bytes]) -> None:
        if not self.ready.called:
            self.ready.callback(None)

    def request(self, what: str, data: bytes, done: Callable[[list[bytes]], None]) -> None:
        self.waiting.append((what, reactor.seconds(), done))  # type: ignore[attr-defined]
        self.transport.write(data)  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        while len(self.buffer) >= 4:
            (size,) = struct.unpack("<I", self.buffer[:4])
            if len(self.buffer) < 4 + size:
                break
            self.frames.append(self.buffer[4 : 4 + size])
            self.buffer = self.buffer[4 + size :]
        while self.waiting and (count := self.reply_complete()):
            what, started, done = self.waiting.pop(0)
            reply, self.frames = self.frames[:count], self.frames[count:]
            if what != "register" and self.bench.tally.counting:
                self.bench.tally.round_trip.append(reactor.seconds() - started)  # type: ignore[attr-defined]
            done(reply)

    def reply_complete(self) -> int:
        """How many frames the oldest reply has, once they are all here; else 0."""
        what = self.waiting[0][0]
        if what != "receive":
            return 1 if self.frames else 0
        if not self.frames:
            return 0
        count = 1 + 2 * int(self.frames[0])
        return count if len(self.frames) >= count else 0

    def sent(self, mid: str, reply: list[bytes]) -> None:
        full = FULL.match(reply[0])
        if full:
            names = [n.strip().strip("'") for n in full.group(1).decode().split(",")]
            self.bench.tally.refuse(names, mid)
        elif reply != [b"Message added to storage!"]:
            self.bench.tally.errors[reply[0].decode("utf-8", "replace")[:40]] += 1

    def received(self, reply: list[bytes]) -> None:
        for text in reply[2::2]:
            self.bench.tally.deliver(self.name, text.decode(), push=False)

    def tick(self) -> None:
        if self.waiting:
            return  # the last command is not answered yet: a slow server
        self.flip = not self.flip
        if self.flip:
            mid = self.next_id()
            self.bench.tally.send(mid, self.name)
            data = command(b"sendall", mid.encode())
            self.request("sendall", data, lambda reply: self.sent(mid, reply))
        else:
            self.request("receive", command(b"receive"), self.received)


class Bench:
    def __init__(self, port: int, lines: int, binaries: int) -> None:
        self.port = port
        self.names = [f"l{i}" for i in range(lines)] + [f"b{i}" for i in range(binaries)]
        self.clients: list[Honest] = []
        self.tally = Tally(self.names)
        self.serial = 0

    def next_serial(self) -> int:
        self.serial += 1
        return self.serial

    async def connect(self) -> None:
        for i, name in enumerate(self.names):
            kind = HonestLine if name.startswith("l") else HonestBinary
            client = kind(name, self)
            source = f"127.0.2.{i + 1}"
            await connectProtocol(endpoint(self.port, source), client)
            await client.ready.addTimeout(10, reactor)  # type: ignore[arg-type]
            self.clients.append(client)

    async def phase(self, seconds: float, interval: float) -> Tally:
        self.tally = Tally(self.names)
        loops = []
        for client in self.clients:
            loop = task.LoopingCall(client.tick)
            loop.start(interval, now=False).addErrback(lambda f: None)
            loops.append(loop)
            await sleep(interval / len(self.clients))  # spread them out
        await sleep(seconds)
        for loop in loops:
            loop.stop()
        self.tally.counting = False
        await sleep(1.0)  # what is in flight lands
        for client in self.clients:  # binary users collect what waits for them
            if isinstance(client, HonestBinary) and not client.waiting and not client.lost:
                client.request("receive", command(b"receive"), client.received)
        await sleep(1.0)
        return self.tally


# Hostile traffic, in a process of its own


class Hostile(Protocol):
    """A hostile client: what it does on connecting, and again and again after."""

    def __init__(self, kind: str, counts: Counter[str]) -> None:
        self.kind = kind
        self.counts = counts
        self.gone: Deferred[None] = Deferred()
        self.loop: task.LoopingCall | None = None

    def connectionMade(self) -> None:
        self.counts[f"{self.kind} connections"] += 1
        write = self.transport.write  # type: ignore[union-attr]
        if self.kind == "garbage":
            self.every(0.02, lambda: write(os.urandom(random.randint(1, 2048))))
        elif self.kind == "line-flood":
            # At the default flood limit: a burst of 50, then 20 a second.
            write(b"!nick f%d\n" % random.randint(0, 10**6) + b"!sendmsg spam spam spam\n" * 49)
            self.every(0.05, lambda: write(b"!sendmsg spam spam spam\n"))
        elif self.kind == "slowloris":
            # A command that never ends, a byte at a time.
            write(b"!")
            self.every(1.0, lambda: write(b"x"))
        elif self.kind == "binary-flood":
            write(command(b"register", b"F%d" % random.randint(0, 10**6)))
            self.every(0.01, lambda: write(command(b"users") * 4000))
        elif self.kind == "non-reader":
            # Asks for output, then never reads it.
            write(b"!nick n%d\n" % random.randint(0, 10**6) + b"!help\n" * 200)
            self.transport.pauseProducing()  # type: ignore[union-attr]
        elif self.kind == "churn":
            self.transport.abortConnection()  # type: ignore[union-attr]
        # "silent" says nothing, like a port scanner.

    def every(self, seconds: float, action: Callable[[], None]) -> None:
        self.loop = task.LoopingCall(action)
        self.loop.start(seconds).addErrback(lambda f: None)

    def dataReceived(self, data: bytes) -> None:
        for word in TOLD:
            if word in data:
                self.counts[f"told {word.decode()}"] += 1

    def connectionLost(self, reason: Failure | None = None) -> None:
        if self.loop is not None and self.loop.running:
            self.loop.stop()
        self.gone.callback(None)


# What a hostile client may be told before it is thrown out.
TOLD = (b"flood", b"Too many commands", b"Too many users", b"server-full", b"Server is full", b"timeout")
KINDS = {"garbage": 20, "line-flood": 3, "slowloris": 20, "churn": 20, "silent": 20}
HEAVY = {"binary-flood": 5, "non-reader": 20}
ABANDONED = 96


async def attacker(port: int, kind: str, slot: int, counts: Counter[str], until: float) -> None:
    """One hostile client slot: connect, do harm, reconnect when thrown out."""
    while time.monotonic() < until:
        # A line flooder has an address of its own; the rest share 20.
        own = kind == "line-flood"
        source = f"127.0.1.{101 + slot}" if own else f"127.0.1.{random.randint(1, 20)}"
        client = Hostile(kind, counts)
        try:
            await connectProtocol(endpoint(port, source), client)
        except Exception:
            counts[f"{kind} connect failed"] += 1
            await sleep(0.05)
            continue
        timer = reactor.callLater(max(0.0, until - time.monotonic()), client.transport.abortConnection)  # type: ignore[attr-defined]
        await client.gone
        if timer.active():
            timer.cancel()
        await sleep(0.01)


async def abandon(port: int, counts: Counter[str]) -> None:
    """Register binary users, then cut them off: their mailboxes are never read."""
    for i in range(ABANDONED):
        client = Hostile("abandoned", counts)
        await connectProtocol(endpoint(port, f"127.0.5.{1 + i % 4}"), client)
        client.transport.write(command(b"register", b"gone%d" % i))  # type: ignore[union-attr]
        await sleep(0.01)
        client.transport.abortConnection()  # type: ignore[union-attr]
        await client.gone


def run_hostile(port: int, seconds: float, heavy: bool) -> None:
    counts: Counter[str] = Counter()
    until = time.monotonic() + seconds
    kinds = {**KINDS, **(HEAVY if heavy else {})}

    async def main() -> None:
        from twisted.internet.defer import gatherResults

        slots = [Deferred.fromCoroutine(abandon(port, counts))] + [
            Deferred.fromCoroutine(attacker(port, kind, slot, counts, until))
            for kind, n in kinds.items()
            for slot in range(n)
        ]
        await gatherResults(slots)

    def done(result: object) -> None:
        for key, value in sorted(counts.items()):
            print(f"  {key}: {value}")
        reactor.stop()  # type: ignore[attr-defined]

    ensureDeferred(main()).addBoth(done)
    reactor.run()  # type: ignore[attr-defined]


# The server, and the report


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def start_server(port: int, log: str, extra: list[str]) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
            "-n", "--pidfile=", f"--logfile={log}", "chatd",
            "--port", f"tcp:{port}:interface={HOST}", "--no-web", *extra]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": CHECKOUT}
    server = subprocess.Popen(argv, env=env, cwd=CHECKOUT)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            socket.create_connection((HOST, port), timeout=1).close()
            return server
        except OSError:
            time.sleep(0.05)
    server.kill()
    raise SystemExit("chatd did not start")


def peak_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    """User and system CPU time a process has used."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def report(title: str, tally: Tally, pid: int, cpu: float) -> None:
    ms = 1000
    print(f"{title}: {len(tally.sent)} honest broadcasts")
    for prefix, kind in (("l", "line"), ("b", "binary")):
        owed, arrived, twice, refused, lost = tally.by_kind(prefix)
        print(
            f"  to honest {kind} users: {owed} owed, {arrived} arrived, {twice} twice,"
            f" {refused} refused with notice (mailbox full), {lost} lost"
        )
    print(
        f"  line push latency: p50 {percentile(tally.push_latency, 50) * ms:.1f} ms,"
        f" p99 {percentile(tally.push_latency, 99) * ms:.1f} ms,"
        f" max {max(tally.push_latency, default=0) * ms:.1f} ms"
    )
    print(
        f"  binary round trip: p50 {percentile(tally.round_trip, 50) * ms:.1f} ms,"
        f" p99 {percentile(tally.round_trip, 99) * ms:.1f} ms"
    )
    if tally.errors:
        print(f"  honest errors: {dict(tally.errors)}")
    print(
        f"  server: {cpu_seconds(pid) - cpu:.1f} CPU s in the phase,"
        f" peak RSS so far {peak_rss_kib(pid) / 1024:.1f} MiB;"
        f" machine load average {os.getloadavg()[0]:.2f}"
    )


def log_summary(log: str) -> None:
    with open(log, errors="replace") as f:
        text = f.read()
    for needle in ("slow reader", "flood", "timeout", "turning", "Unhandled", "Traceback"):
        print(f"  server log lines with {needle!r}: {text.count(needle)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each phase")
    parser.add_argument("--interval", type=float, default=0.5, help="honest send interval")
    parser.add_argument("--lines", type=int, default=20, help="honest line users")
    parser.add_argument("--binaries", type=int, default=5, help="honest binary users")
    parser.add_argument("--nice", type=int, default=19, help="niceness of the attack process")
    parser.add_argument("--heavy", action="store_true",
                        help="add binary 'users' floods and non-reading clients to the attack")
    parser.add_argument("--hostile", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("extra", nargs="*", help="options passed on to chatd")
    args = parser.parse_args()
    if args.hostile:
        run_hostile(args.hostile, args.seconds, args.heavy)
        return

    port = free_port()
    log = os.path.join(tempfile.mkdtemp(prefix="chatd-bench-"), "chatd.log")
    server = start_server(port, log, args.extra)
    bench = Bench(port, args.lines, args.binaries)
    print(f"chatd pid {server.pid} on {HOST}:{port}, log {log}")
    print(f"honest: {args.lines} line + {args.binaries} binary users, one broadcast each per "
          f"{args.interval * 2:g} s, binary users polling each {args.interval * 2:g} s; "
          f"phases of {args.seconds:g} s; attack at nice {args.nice}")  # fmt: skip

    async def run() -> None:
        await bench.connect()
        cpu = cpu_seconds(server.pid)
        alone = await bench.phase(args.seconds, args.interval)
        report("honest alone", alone, server.pid, cpu)
        argv = ["nice", "-n", str(args.nice), sys.executable, __file__,
                "--hostile", str(port), "--seconds", str(args.seconds),
                *(["--heavy"] if args.heavy else [])]  # fmt: skip
        hostile = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        cpu = cpu_seconds(server.pid)
        busy = await bench.phase(args.seconds, args.interval)
        report("honest with hostile load", busy, server.pid, cpu)
        out, _ = hostile.communicate(timeout=60)
        print("hostile load:")
        print(out, end="")
        log_summary(log)

    def stop(result: object) -> None:
        if isinstance(result, Failure):
            result.printTraceback()
        server.terminate()
        server.wait(10)
        reactor.stop()  # type: ignore[attr-defined]

    reactor.callWhenRunning(lambda: ensureDeferred(run()).addBoth(stop))  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
