"""A real server killed with SIGKILL loses no acknowledged message.

The server runs as C{twistd -n chatd --database F} in a subprocess, on a
loopback port. A client pipelines C{send}s and counts the acknowledgements
until the server is killed at a random (seeded) moment; the next server on
the same file must deliver every acknowledged message exactly once, in order,
and nothing that was never sent.
"""

from __future__ import annotations

import os
import random
import re
import socket
import subprocess
import sys
import threading
import time

from twisted.trial.unittest import SynchronousTestCase

from chatd import binwire
from tests.blocking import BinaryClient
from tests.support import command, temporary_directory

WORKTREE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEED = 20261121
ROUNDS = 3
# Sends waiting for their acknowledgement at any time.
WINDOW = 64
TIMEOUT = 10.0
# twistd, run by this Python whatever is on PATH.
TWISTD = "from twisted.scripts.twistd import run; run()"


class ChatdProcess:
    """C{twistd -n chatd} on a loopback port, logging to a file."""

    def __init__(self, directory: str, *options: str) -> None:
        self.log = os.path.join(directory, f"twistd-{time.monotonic_ns()}.log")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [WORKTREE, *filter(None, [env.get("PYTHONPATH")])]
        )
        self.process = subprocess.Popen(
            [sys.executable, "-c", TWISTD, "-n", "--pidfile=", "--logfile", self.log,
             "chatd", *options, "--port", "tcp:0:interface=127.0.0.1", "--no-web"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def port(self) -> int:
        """Wait for the server to listen, and return its port."""
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"chatd exited: {self.process.stderr.read()!r}")
            try:
                with open(self.log) as f:
                    # The chat port: not the metrics or web one that may come first.
                    found = re.search(r"ChatFactory starting on (\d+)", f.read())
            except FileNotFoundError:
                found = None
            if found:
                return int(found.group(1))
            time.sleep(0.02)
        raise AssertionError("chatd did not start listening")

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(TIMEOUT)

    def stop(self) -> str:
        """Stop with SIGTERM, as Docker does; return the log."""
        self.process.terminate()
        self.process.wait(TIMEOUT)
        with open(self.log) as f:
            return f.read()


def send_until_gone(client: BinaryClient, texts: list[str]) -> tuple[int, int]:
    """Pipeline a C{send} of each text to rx until the server is gone.

    @return: how many were sent, and how many acknowledged (the first ones).
    """
    sent = acknowledged = 0
    try:
        while acknowledged < len(texts):
            while sent < len(texts) and sent - acknowledged < WINDOW:
                client.sock.sendall(command(b"send", b"rx", texts[sent].encode()))
                sent += 1
            reply = client.frame()
            if reply != binwire.ADDED:
                raise AssertionError(f"unexpected reply {reply!r}")
            # Replies come in order: this one acknowledges the oldest send.
            acknowledged += 1
    except (ConnectionError, socket.timeout):
        pass
    return sent, acknowledged


class CrashTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = temporary_directory(self)
        self.database = os.path.join(self.directory, "chatd.sqlite")

    def start(self) -> tuple[ChatdProcess, int]:
        # One sender fills rx's mailbox: room for all it can send before the kill.
        server = ChatdProcess(
            self.directory, "--database", self.database,
            "--mailbox-size", "100000", "--mailbox-share", "100000",
            "--mailbox-host-share", "100000",
        )  # fmt: skip
        self.addCleanup(lambda: server.process.poll() is None and server.kill())
        self.addCleanup(server.process.stderr.close)
        return server, server.port()

    def test_kill_loses_no_acknowledged_message(self) -> None:
        rng = random.Random(SEED)
        sent: list[str] = []
        acknowledged: list[str] = []
        received: list[str] = []
        for turn in range(ROUNDS + 1):
            server, port = self.start()
            rx = BinaryClient(port)
            greeting = "Hello, rx" if turn == 0 else "Nice to see you, rx"
            self.assertEqual(rx.ask(b"register", b"rx"), greeting)
            received += [text for _, text in rx.receive()]
            rx.close()
            if turn == ROUNDS:
                self.assertIn("Server Shut Down.", server.stop())
                break
            tx = BinaryClient(port)
            tx.ask(b"register", b"tx")
            texts = [f"r{turn} m{n}" for n in range(100_000)]
            # Kill at a random moment while acknowledgements stream in.
            killer = threading.Timer(rng.uniform(0.05, 0.8), server.kill)
            killer.start()
            n_sent, n_acknowledged = send_until_gone(tx, texts)
            killer.join()
            tx.close()
            self.assertLess(n_acknowledged, len(texts), "the server outlived the sends")
            sent += texts[:n_sent]
            acknowledged += texts[:n_acknowledged]

        self.assertGreater(len(acknowledged), 0)
        self.assertEqual(len(received), len(set(received)), "a message came twice")
        self.assertEqual(set(received) - set(sent), set(), "a message never sent came")
        self.assertEqual(set(acknowledged) - set(received), set(), "an acknowledged message was lost")
        position = {text: n for n, text in enumerate(sent)}
        self.assertEqual(received, sorted(received, key=position.__getitem__), "order was lost")

    def test_unusable_database(self) -> None:
        """twistd ends at once with one readable line, no traceback."""
        missing = os.path.join(self.directory, "nowhere", "chatd.sqlite")
        server = ChatdProcess(self.directory, "--database", missing)
        _, stderr = server.process.communicate(timeout=TIMEOUT)
        self.assertEqual(server.process.returncode, 1)
        self.assertEqual(
            stderr.decode().strip(),
            f"chatd: cannot create database {missing}: no directory {os.path.dirname(missing)}",
        )
