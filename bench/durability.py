"""What durability costs: acknowledged sends per second, with and without --database.

    python3 bench/durability.py [--clients 32] [--window 4] [--seconds 3]

For each mode, a chatd server runs in a child process (built by chatd.tap's
makeService, on a loopback port) with a probe that wakes every millisecond and
records how late the reactor let it run. This process connects --clients
binary clients; each registers, then keeps --window sends to itself in flight
for --seconds, timing each from its send to its acknowledgement. Printed per
mode: acknowledged sends per second, the p50 and p99 acknowledgement latency,
and the reactor's p99 and worst pause. Loopback only, bounded, no assertions.
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections import deque

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from open_limits import OPEN_LIMITS  # noqa: E402
from twisted.internet.interfaces import IReactorTime  # noqa: E402

from chatd import binwire  # noqa: E402

PROBE_INTERVAL = 0.001


# The server side, in a child process

class Probe:
    """Wakes every millisecond and records how late the reactor let it run."""

    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock
        self.pauses: list[float] = []
        self._call = clock.callLater(PROBE_INTERVAL, self._wake, clock.seconds() + PROBE_INTERVAL)

    def _wake(self, expected: float) -> None:
        now = self.clock.seconds()
        self.pauses.append(now - expected)
        self._call = self.clock.callLater(PROBE_INTERVAL, self._wake, now + PROBE_INTERVAL)

    def stop(self) -> dict[str, float]:
        self._call.cancel()
        pauses = sorted(self.pauses)
        return {"p99_pause": pauses[int(len(pauses) * 0.99)], "worst_pause": pauses[-1]}


def serve(port: int, database: str | None) -> None:
    """Run chatd with the probe until SIGTERM; then print what the probe saw."""
    from twisted.internet import reactor

    from chatd.tap import Options, makeService

    args = ["--port", f"tcp:{port}:interface=127.0.0.1", "--no-web", *OPEN_LIMITS]
    if database is not None:
        args += ["--database", database]
    config = Options()
    config.parseOptions(args)
    service = makeService(config, reactor)
    service.startService()
    probe = Probe(reactor)
    report: dict[str, float] = {}

    def stop() -> object:
        report.update(probe.stop())
        return service.stopService()

    reactor.addSystemEventTrigger("before", "shutdown", stop)
    print("ready", flush=True)
    reactor.run()
    print(json.dumps(report), flush=True)


# The client side

class Client:
    """One binary client keeping C{window} sends to itself in flight."""

    def __init__(self, port: int, name: str) -> None:
        self.name = name.encode()
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""
        self.sent: deque[float] = deque()
        self.sock.sendall(binwire.frames("register", name))
        while not self.replies():
            self.buffer += self.sock.recv(4096)
        self.sock.setblocking(False)

    def send(self) -> None:
        self.sent.append(time.perf_counter())
        self.sock.send(binwire.frames("send", self.name.decode(), "durable?"))

    def replies(self) -> list[bytes]:
        """Take every whole frame from the buffer."""
        frames = []
        while len(self.buffer) >= 4:
            (n,) = struct.unpack("<I", self.buffer[:4])
            if len(self.buffer) < 4 + n:
                break
            frames.append(self.buffer[4 : 4 + n])
            self.buffer = self.buffer[4 + n :]
        return frames


def load(port: int, clients: int, window: int, seconds: float) -> tuple[int, list[float]]:
    """Drive the server; return the acknowledgements and their latencies."""
    selector = selectors.DefaultSelector()
    everyone = [Client(port, f"b{n}") for n in range(clients)]
    for client in everyone:
        selector.register(client.sock, selectors.EVENT_READ, client)
        for _ in range(window):
            client.send()
    latencies: list[float] = []
    added = binwire.ADDED.encode()
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        for key, _ in selector.select(timeout=0.1):
            client = key.data
            client.buffer += client.sock.recv(65536)
            now = time.perf_counter()
            for reply in client.replies():
                assert reply == added, reply
                latencies.append(now - client.sent.popleft())
                client.send()
    for client in everyone:
        client.sock.close()
    return len(latencies), latencies


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(mode: str, database: str | None, options: argparse.Namespace) -> None:
    port = free_port()
    args = [sys.executable, __file__, "--serve", str(port)]
    if database is not None:
        args += ["--database", database]
    child = subprocess.Popen(args, stdout=subprocess.PIPE)
    assert child.stdout is not None
    try:
        assert child.stdout.readline().strip() == b"ready"
        acks, latencies = load(port, options.clients, options.window, options.seconds)
        child.terminate()
        server = json.loads(child.communicate(timeout=10)[0])
    finally:
        if child.poll() is None:
            child.kill()
    latencies.sort()
    print(
        f"{mode:<10} {acks / options.seconds:>9.0f} "
        f"{latencies[len(latencies) // 2] * 1000:>9.2f} "
        f"{latencies[int(len(latencies) * 0.99)] * 1000:>9.2f} "
        f"{server['p99_pause'] * 1000:>11.2f} {server['worst_pause'] * 1000:>12.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--window", type=int, default=4, help="sends in flight per client")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--database", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.serve is not None:
        serve(options.serve, options.database)
        return
    print(
        f"{options.clients} clients, {options.window} sends in flight each, "
        f"{options.seconds:g} s a mode, loopback"
    )
    print(f"{'mode':<10} {'acks/s':>9} {'p50 ms':>9} {'p99 ms':>9} "
          f"{'p99 pause':>11} {'worst pause':>12}")
    run("memory", None, options)
    with tempfile.TemporaryDirectory(prefix="chatd-bench-") as directory:
        run("database", os.path.join(directory, "chatd.sqlite"), options)


if __name__ == "__main__":
    main()
