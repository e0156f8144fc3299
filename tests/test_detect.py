"""First-byte protocol detection (PROTOCOL.md section 1)."""

from __future__ import annotations

import struct
from typing import Callable

from twisted.trial.unittest import SynchronousTestCase

from tests.support import Client, Server, command

# 0x00-0x1F but TAB, LF and CR: the bytes that start the binary protocol.
BINARY_STARTS = [byte for byte in range(0x20) if byte not in b"\t\n\r"]
LINE_STARTS = [byte for byte in range(0x100) if byte not in BINARY_STARTS]


def binary_probe(first: int) -> bytes:
    """A frame whose length's low byte is C{first}: an unknown command name."""
    return struct.pack("<I", first) + b"?" * first


def line_probe(first: int) -> bytes:
    """A line that opens with C{first}: answered by C{!help} or an C{!error}."""
    return bytes([first]) + b"!help\n"


def answered_in_binary(client: Client) -> bool:
    return client.frames() == [b"Unknown command!"] and client.closed


def answered_in_lines(client: Client) -> bool:
    """Whether the server answered with nothing but C{!} lines ended by LF."""
    data = client.take()
    return data.endswith(b"\n") and all(line.startswith(b"!") for line in data.splitlines())


class DetectionTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.server = Server()

    def probe(self, first: int, *segments: bytes) -> Client:
        """A new connection that sends C{segments}, the first opening with C{first}."""
        self.assertEqual(segments[0][0], first)
        client = self.server.connect(f"10.0.{first}.1")
        for segment in segments:
            client.send(segment)
        return client

    def test_partition(self) -> None:
        self.assertEqual(len(BINARY_STARTS), 29)
        self.assertEqual(len(BINARY_STARTS) + len(LINE_STARTS), 256)

    def misrouted(
        self,
        starts: list[int],
        probe: Callable[[int], bytes],
        answered: Callable[[Client], bool],
    ) -> list[str]:
        """The first bytes among C{starts} whose probe is not answered as expected."""
        return [hex(first) for first in starts if not answered(self.probe(first, probe(first)))]

    def test_control_bytes_start_binary(self) -> None:
        self.assertEqual(self.misrouted(BINARY_STARTS, binary_probe, answered_in_binary), [])

    def test_every_other_byte_starts_lines(self) -> None:
        self.assertEqual(self.misrouted(LINE_STARTS, line_probe, answered_in_lines), [])

    def test_first_byte_alone(self) -> None:
        users = command(b"users")
        binary = self.probe(users[0], users[:1], users[1:])
        self.assertEqual(binary.frames(), [b"0"])
        line = self.probe(ord("!"), b"!", b"nick bob\n")
        self.assertEqual(line.lines(), ["!users 1 bob"])

    def test_white_space_starts_lines(self) -> None:
        for start in [b"\t", b"\n", b"\r\n"]:
            client = self.server.connect()
            client.send(start + b"!help\n")
            self.assertIn("!help !nick", client.lines()[0], start)

    def test_each_command_starts_binary(self) -> None:
        # A binary session may open with any command; their names are 4 to 8 bytes.
        openings = {
            (b"users",): b"0",
            (b"send", b"bob", b"hi"): b"U aren't registered!",
            (b"logout",): b"U've been successfully logouted",
            (b"receive",): b"U aren't registered!",
            (b"sendall", b"hi"): b"U aren't registered!",
            (b"register", b"zed"): b"Hello, zed",
        }
        for parts, reply in openings.items():
            client = self.server.connect()
            client.send(command(*parts))
            self.assertEqual(client.frames(), [reply], parts)

    def test_server_waits_for_client(self) -> None:
        client = self.server.connect()
        self.assertEqual(client.take(), b"")
        self.server.clock.advance(29)
        self.assertEqual(client.take(), b"")
        self.assertFalse(client.closed)

    def test_choice_is_made_once_binary(self) -> None:
        client = self.server.connect()
        client.send(command(b"register", b"alice"))
        client.take()
        # A 33-byte text: this segment opens with 0x21, "!".
        client.send(command(b"sendall"))
        client.send(command(b"!" * 33))
        self.assertEqual(client.frames(), [b"Message added to storage!"])

    def test_choice_is_made_once_line(self) -> None:
        client = self.server.connect()
        client.send(b"!nick bob\n")
        client.take()
        client.send(command(b"users") + b"\n")
        (reply,) = client.lines()
        self.assertTrue(reply.startswith("!error unknown-command "), reply)
