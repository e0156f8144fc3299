#!/usr/bin/env python3
"""What one scrape of /metrics costs the reactor, on a busy server.

    python3 bench/scrape.py                       # 500 connections, 5000 users
    python3 bench/scrape.py --connections 2000 --users 20000 --mail 10

Builds chatd's factory and hub over StringTransports: CONNECTIONS line and
binary connections (half each) and USERS registered binary users with MAIL
messages each, then times Metrics.scrape(), which runs on the reactor's
thread, and prints one JSON line: the median and the worst of RUNS scrapes,
in milliseconds, and the size of the page.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def frames(*parts: bytes) -> bytes:
    return b"".join(len(part).to_bytes(4, "little") + part for part in parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=500)
    parser.add_argument("--users", type=int, default=5000)
    parser.add_argument("--mail", type=int, default=20, help="messages per binary user")
    parser.add_argument("--runs", type=int, default=50)
    options = parser.parse_args()
    sys.path.insert(0, str(ROOT))

    from twisted.internet.address import IPv4Address
    from twisted.internet.task import Clock
    from twisted.internet.testing import StringTransport

    from chatd.factory import ChatFactory
    from chatd.hub import Hub
    from chatd.metrics import Metrics
    from chatd.rules import Limits

    clock = Clock()
    many = 10**9
    hub = Hub(Limits(max_connections=many, max_connections_per_host=many,
                     max_binary_users=many, max_binary_users_per_host=many,
                     mailbox_size=many))
    factory = ChatFactory(hub, clock)
    metrics = Metrics(clock, database=True)
    metrics.watch(factory)
    for i in range(options.users):
        user, _ = hub.register(f"u{i}", "10.0.0.1")
        for n in range(options.mail):
            hub.mailboxes.store.add_mail(user.key, "x", "m")  # type: ignore[attr-defined]
            user.mailbox.append(None)  # type: ignore[arg-type]
    for i in range(options.connections):
        addr = IPv4Address("TCP", f"127.0.{i // 250}.{i % 250}", 40000)
        protocol = factory.buildProtocol(addr)
        protocol.makeConnection(StringTransport(peerAddress=addr))
        if i % 2:
            protocol.dataReceived(f"!nick l{i}\n".encode())
        else:
            protocol.dataReceived(frames(b"register", f"u{i}".encode()))
    times = []
    for _ in range(options.runs):
        started = time.perf_counter()
        page = metrics.scrape()
        times.append(time.perf_counter() - started)
    print(json.dumps({
        "connections": options.connections, "users": options.users, "mail": options.mail,
        "scrape_ms_median": round(1000 * statistics.median(times), 2),
        "scrape_ms_max": round(1000 * max(times), 2), "bytes": len(page),
    }))


if __name__ == "__main__":
    main()
