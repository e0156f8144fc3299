"""Blocking clients of both protocols on real sockets, for tests of real processes."""

from __future__ import annotations

import socket
import struct
import time
from typing import Callable

from tests.support import command

# How long any wait for a server may take before the test fails.
PATIENCE = 10.0


class LineClient:
    """A blocking PyChat-protocol client that collects what the server says."""

    def __init__(self, port: int, nick: str | None = None) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=PATIENCE)
        self._buffer = b""
        self.seen: list[str] = []
        if nick is not None:
            self.say(f"!nick {nick}")
            reply = self.expect(lambda line: line.startswith(("!users", "!error")))
            if not reply.startswith("!users"):
                raise AssertionError(f"{nick} refused: {reply}")

    def say(self, line: str) -> None:
        self.sock.sendall(line.encode("utf-8") + b"\n")

    def line(self, timeout: float = PATIENCE) -> str | None:
        """The next line, or None if none comes within C{timeout}; C{''} at EOF."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                return None
            except ConnectionError:
                data = b""
            if not data:
                return ""
            self._buffer += data
        raw, self._buffer = self._buffer.split(b"\n", 1)
        text = raw.decode("utf-8")
        self.seen.append(text)
        return text

    def expect(self, match: Callable[[str], bool], timeout: float = PATIENCE) -> str:
        """Read until a line C{match}es; fail if none does in time."""
        deadline = time.monotonic() + timeout
        while True:
            line = self.line(max(0.0, deadline - time.monotonic()))
            if line is None or line == "":
                raise AssertionError(f"no matching line; saw {self.seen[-20:]}")
            if match(line):
                return line

    def quiet(self, timeout: float = 0.5) -> list[str]:
        """Every line that comes until the server is quiet for C{timeout}."""
        lines = []
        while True:
            line = self.line(timeout)
            if not line:
                return lines
            lines.append(line)

    def close(self) -> None:
        self.sock.close()


class BinaryClient:
    """A blocking ASVT-chat client."""

    def __init__(self, port: int, name: str | None = None) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=PATIENCE)
        self._buffer = b""
        if name is not None:
            reply = self.ask(b"register", name.encode())
            if not reply.startswith(("Hello", "Nice")):
                raise AssertionError(f"{name} refused: {reply}")

    def frame(self) -> str:
        while True:
            if len(self._buffer) >= 4:
                (n,) = struct.unpack("<I", self._buffer[:4])
                if len(self._buffer) >= 4 + n:
                    payload, self._buffer = self._buffer[4 : 4 + n], self._buffer[4 + n :]
                    return payload.decode("utf-8")
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionResetError("the server closed the connection")
            self._buffer += data

    def ask(self, *parts: bytes) -> str:
        self.sock.sendall(command(*parts))
        return self.frame()

    def users(self) -> list[str]:
        self.sock.sendall(command(b"users"))
        return [self.frame() for _ in range(int(self.frame()))]

    def receive(self) -> list[tuple[str, str]]:
        self.sock.sendall(command(b"receive"))
        return [(self.frame(), self.frame()) for _ in range(int(self.frame()))]

    def close(self) -> None:
        self.sock.close()
