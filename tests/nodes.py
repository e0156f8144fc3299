"""Real chatd nodes on a real PostgreSQL, and test cases that talk to them."""

from __future__ import annotations

import time
from typing import Callable

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests import pgserver
from tests.blocking import PATIENCE, BinaryClient, LineClient
from tests.support import temporary_directory
from tests.test_crash import ChatdProcess

def require_postgres() -> None:
    reason = pgserver.unavailable()
    if reason is not None:
        raise SkipTest(reason)


class Cluster:
    """Nodes of one chatd on one database, stopped when the test ends."""

    def __init__(self, case: SynchronousTestCase, uri: str, *options: str) -> None:
        self.case = case
        self.uri = uri
        self.options = options
        self.directory = temporary_directory(case)
        self.nodes: list[ChatdProcess] = []
        self.ports: list[int] = []

    def start(self, count: int = 2) -> list[int]:
        started = []
        for _ in range(count):
            node = ChatdProcess(self.directory, "--database", self.uri, *self.options)
            self.case.addCleanup(_stop_quietly, node)
            self.nodes.append(node)
            started.append(node)
        ports = [node.port() for node in started]
        self.ports.extend(ports)
        return ports

    def logs(self) -> str:
        out = []
        for node in self.nodes:
            try:
                with open(node.log) as f:
                    out.append(f.read())
            except OSError:
                pass
        return "\n".join(out)


def _stop_quietly(node: ChatdProcess) -> None:
    if node.process.poll() is None:
        node.process.kill()
        node.process.wait(PATIENCE)


class NodeClientsTestCase(SynchronousTestCase):
    """A test case whose blocking clients are closed when it ends."""

    def line(self, port: int, nick: str | None = None) -> LineClient:
        client = LineClient(port, nick)
        self.addCleanup(client.close)
        return client

    def binary(self, port: int, name: str | None = None) -> BinaryClient:
        client = BinaryClient(port, name)
        self.addCleanup(client.close)
        return client


def eventually(probe: Callable[[], object], what: str, timeout: float = PATIENCE) -> object:
    """Call C{probe} until it returns something true, for at most C{timeout} seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout} s for {what}")
        time.sleep(0.05)
