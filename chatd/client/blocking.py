"""A blocking client for the binary protocol, on a plain socket, for scripts."""

from __future__ import annotations

import socket
from types import TracebackType

from chatd import binwire
from chatd.client import commands
from chatd.client.binary import DEFAULT_PORT
from chatd.client.commands import Command, Message, T, Text
from chatd.client.errors import Disconnected, ProtocolError


class BlockingClient:
    """One connection to a binary-protocol server; each command waits for its reply.

    Use it as a context manager, or call L{close}. A refused command raises
    the L{ChatdError} for the server's reply.
    """

    def __init__(
        self, host: str = "localhost", port: int = DEFAULT_PORT, timeout: float = 10.0
    ) -> None:
        self._sock = socket.create_connection((host, port), timeout)

    def __enter__(self) -> BlockingClient:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._sock.close()

    # Commands

    def register(self, name: Text) -> str:
        return self.call(commands.register(name))

    def users(self) -> list[str]:
        return self.call(commands.users())

    def send(self, receiver: Text, text: Text) -> None:
        self.call(commands.send(receiver, text))

    def sendall(self, text: Text) -> None:
        self.call(commands.sendall(text))

    def receive(self) -> list[Message]:
        return self.call(commands.receive())

    def logout(self) -> None:
        self.call(commands.logout())

    def call(self, command: Command[T]) -> T:
        """Send C{command} and return its parsed reply."""
        try:
            self._sock.sendall(command.data)
        except OSError as e:
            raise Disconnected(f"cannot send: {e}") from e
        reader = command.reader()
        while True:
            try:
                done = commands.feed(reader, self._frame())
            except ProtocolError:
                self.close()
                raise
            if done is not None:
                return done.value

    # Framing

    def _frame(self) -> bytes:
        length = binwire.length(self._exactly(binwire.PREFIX_LENGTH))
        if length > commands.MAX_FRAME_LENGTH:
            raise ProtocolError(f"a frame of {length} bytes")
        return self._exactly(length)

    def _exactly(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            try:
                chunk = self._sock.recv(size - len(data))
            except ConnectionError as e:
                raise Disconnected(f"the connection broke: {e}") from e
            if not chunk:
                raise Disconnected("the server closed the connection")
            data += chunk
        return data
