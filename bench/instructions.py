#!/usr/bin/env python3
"""chatd's own cost per mailbox command, without sockets or a reactor.

    python3 bench/instructions.py                  # instructions per command
    python3 bench/instructions.py --tree /tmp/old  # another chatd tree
    python3 bench/instructions.py --time           # microseconds instead
    python3 bench/instructions.py --fanout         # per !sendmsg to 99 line users

50 binary clients, each from a host of its own, over StringTransports: each
round every client sends a message to the next, then every client receives
its mail. What is counted is the factory, the protocol, the hub and the
store; not the kernel, not Twisted's reactor. Under valgrind's callgrind the
count is exact, the same from one run to the next whatever else the machine
is doing: the figure to compare two versions by. It is the difference
between a run of 120 rounds and one of 20, so start-up and imports cancel
out. Prints one JSON line.

With C{--fanout}: 100 line clients, one of which sends C{!sendmsg} to the
other 99; the figure is per message (the difference between 1,200 messages
and 200).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLIENTS = 50


def frames(*parts: bytes) -> bytes:
    return b"".join(len(part).to_bytes(4, "little") + part for part in parts)


def run_rounds(rounds: int) -> float:
    """Run the workload in this process; return the seconds it took."""
    from twisted.internet.address import IPv4Address
    from twisted.internet.task import Clock
    from twisted.internet.testing import StringTransport

    from chatd.factory import ChatFactory
    from chatd.hub import Hub
    from chatd.rules import Limits

    clock = Clock()
    # As the reactor's: a C function, which the flood limit and deadlines call.
    clock.seconds = time.time  # type: ignore[method-assign]
    hub = Hub(Limits(command_rate=1e9, command_burst=10**9))
    factory = ChatFactory(hub, clock)
    clients = []
    for i in range(CLIENTS):
        addr = IPv4Address("TCP", f"127.0.{i}.1", 40000)
        protocol = factory.buildProtocol(addr)
        transport = StringTransport(peerAddress=addr)
        protocol.makeConnection(transport)
        protocol.dataReceived(frames(b"register", b"u%d" % i))
        clients.append((protocol, transport))
    sends = [
        frames(b"send", b"u%d" % ((i + 1) % CLIENTS), b"%d 1234567890 abcdefghijklmnopqrstuvwxyz" % i)
        for i in range(CLIENTS)
    ]
    receive = frames(b"receive")
    start = time.perf_counter()
    for _ in range(rounds):
        for (protocol, _), send in zip(clients, sends):
            protocol.dataReceived(send)
        for protocol, transport in clients:
            protocol.dataReceived(receive)
            transport.clear()
    return time.perf_counter() - start


def run_fanout(messages: int) -> float:
    """Send C{messages} broadcasts from one of 100 line clients; return the seconds."""
    from twisted.internet.address import IPv4Address
    from twisted.internet.task import Clock
    from twisted.internet.testing import StringTransport

    from chatd.factory import ChatFactory
    from chatd.hub import Hub
    from chatd.rules import Limits

    clock = Clock()
    clock.seconds = time.time  # type: ignore[method-assign]
    many = 10**9
    # Whatever limits this tree has, none holds the sender back.
    limits = {name: many for name in ("broadcast_rate", "broadcast_burst")
              if name in Limits.__dataclass_fields__}
    factory = ChatFactory(Hub(Limits(command_rate=1e9, command_burst=many, max_connections=many,
                                     max_connections_per_host=many, **limits)), clock)
    clients = []
    for i in range(100):
        addr = IPv4Address("TCP", "127.0.0.1", 40000 + i)
        protocol = factory.buildProtocol(addr)
        transport = StringTransport(peerAddress=addr)
        protocol.makeConnection(transport)
        protocol.dataReceived(b"!nick u%d\n" % i)
        clients.append((protocol, transport))
    assert len(factory.hub.names()) == 100
    sender = clients[0][0]
    message = b"!sendmsg 123 456 abcdefghijklmnopqrstuvwxyz\n"
    start = time.perf_counter()
    for n in range(messages):
        sender.dataReceived(message)
        if n % 64 == 0:
            for _, transport in clients:
                transport.clear()
    return time.perf_counter() - start


def count(tree: Path, rounds: int, fanout: bool = False) -> int:
    """Instructions callgrind counts for a whole run of C{rounds} rounds (or messages)."""
    argv = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
            sys.executable, __file__, "--tree", str(tree), "--inner", str(rounds),
            *(["--fanout"] if fanout else [])]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    found = re.search(r"Collected : (\d+)", done.stderr)
    if found is None:
        raise SystemExit(f"callgrind gave no count:\n{done.stderr[-2000:]}")
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", type=Path, default=ROOT,
                        help="the chatd source tree to measure (default: this one)")
    parser.add_argument("--time", action="store_true",
                        help="time it instead (best of 7, in microseconds): noisy")
    parser.add_argument("--fanout", action="store_true",
                        help="per !sendmsg to 99 line users instead of per mailbox command")
    parser.add_argument("--inner", type=int, help=argparse.SUPPRESS)
    options = parser.parse_args()
    tree = options.tree.resolve()
    sys.path.insert(0, str(tree))
    commands = 2 * CLIENTS
    if options.inner is not None:
        (run_fanout if options.fanout else run_rounds)(options.inner)
        return
    if options.fanout:
        low, high = count(tree, 200, fanout=True), count(tree, 1200, fanout=True)
        print(json.dumps({"tree": str(tree), "instructions_per_message": round((high - low) / 1000)}))
        return
    if options.time:
        best = min(run_rounds(200) for _ in range(7))
        figures = {"tree": str(tree), "us_per_command": round(best / (200 * commands) * 1e6, 2)}
    else:
        if shutil.which("valgrind") is None:
            raise SystemExit("needs valgrind (apt install valgrind), or use --time")
        low, high = count(tree, 20), count(tree, 120)
        figures = {"tree": str(tree),
                   "instructions_per_command": round((high - low) / (100 * commands))}
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
