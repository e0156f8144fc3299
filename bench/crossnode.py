#!/usr/bin/env python3
"""Several nodes: senders on one chatd node, receivers on another, one PostgreSQL.

    python3 bench/crossnode.py                 # every workload
    python3 bench/crossnode.py broadcast       # line fan-out across nodes
    python3 bench/crossnode.py durable         # binary send, acknowledged once committed

It starts its own PostgreSQL (tests/pgserver.py: initdb into a temporary
directory, fsync on, as nobody when run as root) and two nodes,
`twistd -n chatd --database postgresql://...`, and prints one JSON line of
figures per run:

- broadcast: bench/loadgen.c's fan-out with its sender connected to node A
  and N line receivers to node B (100, then 500); one sender, at most 64
  messages in flight. Messages/s a receiver gets, deliveries/s, latency
  p50/p99 from the send time in each text to its arrival, and lost.
- durable: 32 binary clients on node A, 4 `send`s in flight each, to 32
  binary users whose mailboxes a client on node B drains with `receive`.
  Acknowledged sends/s, acknowledgement latency p50/p99, and lost: every
  acknowledged message must come out of a mailbox exactly once.
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path[:0] = [str(BENCH), str(ROOT)]

from open_limits import OPEN_LIMITS  # noqa: E402
from run import build, free_port, raise_nofile, wait_listening  # noqa: E402
from tests.pgserver import PostgresServer, unavailable  # noqa: E402


class Node:
    """One chatd node on a loopback port."""

    def __init__(self, workdir: Path, uri: str, name: str, *options: str) -> None:
        self.port = free_port()
        self.log = workdir / f"{name}.log"
        argv = [
            sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
            "-n", "--pidfile=", "--logfile", str(self.log), "chatd",
            "--port", f"tcp:{self.port}:interface=127.0.0.1:backlog=1024", "--no-web",
            "--database", uri, *OPEN_LIMITS, *options,
        ]
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.proc = subprocess.Popen(argv, env=env, cwd=workdir, preexec_fn=raise_nofile)
        wait_listening(self.proc, self.port, self.log)

    def cpu(self) -> float:
        """Seconds of CPU the node has used so far."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def postgres_cpu() -> float:
    """Seconds of CPU used so far by every PostgreSQL process on the machine."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        name, rest = text.split("(", 1)[1].rsplit(")", 1)
        if name.startswith("postgres"):
            fields = rest.split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def broadcast(
    a: Node, b: Node, receivers: int, messages: int, window: int
) -> dict[str, object]:
    loadgen = build()
    env = dict(os.environ, LOADGEN_SENDER_PORT=str(a.port))
    out = subprocess.run(
        [str(loadgen), "fanout", str(b.port), str(b.proc.pid), "120",
         str(receivers + 1), "1", str(messages), str(window)],
        env=env, capture_output=True, text=True, timeout=150,
    )
    if out.returncode != 0:
        raise SystemExit(f"loadgen failed: {out.stderr.strip()}")
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    figures["workload"] = "crossnode-broadcast"
    figures["receivers"] = receivers
    figures["messages_per_s"] = round(figures["deliveries_per_s"] / receivers)
    return figures


def frame(payload: bytes) -> bytes:
    return struct.pack("<I", len(payload)) + payload


def command(*parts: bytes) -> bytes:
    return b"".join(frame(p) for p in parts)


class Framed:
    """A binary connection's socket and the frames read from it so far."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""

    def frames(self) -> list[bytes]:
        out = []
        while len(self.buffer) >= 4:
            (n,) = struct.unpack_from("<I", self.buffer)
            if len(self.buffer) < 4 + n:
                break
            out.append(self.buffer[4 : 4 + n])
            self.buffer = self.buffer[4 + n :]
        return out

    def mail(self) -> list[bytes]:
        """The reply to the one receive in flight: the texts."""
        frames = self.frames()
        while not frames:
            self.buffer += self.sock.recv(65536)
            frames = self.frames()
        n = int(frames[0])
        while len(frames) < 1 + 2 * n:
            self.buffer += self.sock.recv(65536)
            frames.extend(self.frames())
        return frames[2::2]

    def ask(self, *parts: bytes) -> bytes:
        self.sock.sendall(command(*parts))
        while True:
            got = self.frames()
            if got:
                return got[0]
            self.buffer += self.sock.recv(65536)


def durable(a: Node, b: Node, clients: int, window: int, seconds: float) -> dict[str, object]:
    senders = [Framed(a.port) for _ in range(clients)]
    for i, s in enumerate(senders):
        s.ask(b"register", f"s{i}".encode())
    drains = [Framed(b.port) for _ in range(clients)]
    for i, d in enumerate(drains):
        d.ask(b"register", f"r{i}".encode())
    received: list[bytes] = []
    stop = threading.Event()

    def drain() -> None:
        """Poll every mailbox on node B, all receives in flight at once."""
        while True:
            quiet = stop.is_set()
            for d in drains:
                d.sock.sendall(command(b"receive"))
            got = 0
            for d in drains:
                texts = d.mail()
                received.extend(texts)
                got += len(texts)
            if quiet and not got:
                return
            time.sleep(0.01)

    drainer = threading.Thread(target=drain)
    drainer.start()
    selector = selectors.DefaultSelector()
    sent_at: list[list[float]] = [[] for _ in senders]
    counts = [0] * clients
    acked: list[bytes] = []
    refused = 0
    latencies: list[float] = []

    def send(i: int) -> None:
        text = f"{i}.{counts[i]}".encode()
        counts[i] += 1
        sent_at[i].append(time.monotonic())
        senders[i].sock.sendall(command(b"send", f"r{i}".encode(), text))

    for i, s in enumerate(senders):
        s.sock.setblocking(False)
        selector.register(s.sock, selectors.EVENT_READ, i)
        for _ in range(window):
            send(i)
    start = time.monotonic()
    cpu_a, cpu_b, cpu_self, cpu_pg = a.cpu(), b.cpu(), time.process_time(), postgres_cpu()
    end = start + seconds
    outstanding = clients * window
    while outstanding:
        for key, _ in selector.select(timeout=1.0):
            i = key.data
            s = senders[i]
            s.buffer += s.sock.recv(65536)
            for reply in s.frames():
                now = time.monotonic()
                latencies.append(now - sent_at[i].pop(0))
                n = counts[i] - len(sent_at[i]) - 1
                if reply == b"Message added to storage!":
                    acked.append(f"{i}.{n}".encode())
                else:
                    refused += 1
                outstanding -= 1
                if now < end:
                    send(i)
                    outstanding += 1
    elapsed = time.monotonic() - start
    cpu_a, cpu_b = a.cpu() - cpu_a, b.cpu() - cpu_b
    cpu_self = time.process_time() - cpu_self
    cpu_pg = postgres_cpu() - cpu_pg
    stop.set()
    drainer.join(60)
    got = set(received)
    lost = sum(1 for m in acked if m not in got)
    duplicates = len(received) - len(got)
    latencies.sort()
    return {
        "workload": "crossnode-durable",
        "clients": clients,
        "in_flight": window,
        "acked": len(acked),
        "refused": refused,
        "seconds": round(elapsed, 3),
        "acked_per_s": round(len(acked) / elapsed),
        "latency_ms": {
            "p50": round(1000 * statistics.median(latencies), 2),
            "p99": round(1000 * latencies[int(0.99 * (len(latencies) - 1))], 2),
        },
        "lost": lost,
        "duplicates": duplicates,
        "cpu_pct": {
            "node_a": round(100 * cpu_a / elapsed),
            "node_b": round(100 * cpu_b / elapsed),
            "clients": round(100 * cpu_self / elapsed),
            "postgres": round(100 * cpu_pg / elapsed),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workloads", nargs="*", default=[], choices=["broadcast", "durable", []])
    parser.add_argument("--seconds", type=float, default=5.0, help="length of the durable run")
    parser.add_argument("--fsync", choices=["on", "off"], default="on")
    args = parser.parse_args()
    workloads = args.workloads or ["broadcast", "durable"]
    reason = unavailable()
    if reason is not None:
        raise SystemExit(f"crossnode: {reason}")
    pg = PostgresServer(fsync=args.fsync == "on")
    workdir = Path(tempfile.mkdtemp(prefix="chatd-crossnode-"))
    try:
        pg.start()
        for workload in workloads:
            runs = (
                [(100, 20000, 64), (500, 4000, 64), (500, 4000, 16)]
                if workload == "broadcast"
                else [(32, 4, 0)]
            )
            for x, y, window in runs:
                uri = pg.new_database()
                a = Node(workdir, uri, "a")
                b = Node(workdir, uri, "b")
                try:
                    if workload == "broadcast":
                        figures = broadcast(a, b, x, y, window)
                    else:
                        figures = durable(a, b, x, y, args.seconds)
                finally:
                    a.stop()
                    b.stop()
                figures["fsync"] = args.fsync
                print(json.dumps(figures), flush=True)
    finally:
        pg.destroy()


if __name__ == "__main__":
    main()
