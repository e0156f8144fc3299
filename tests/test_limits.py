"""PROTOCOL.md section 5, deterministically: StringTransports and a Clock."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from tests.support import Client, Server, command


def register(server: Server, name: bytes, host: str = "127.0.0.1", port: int = 1) -> Client:
    client = server.connect(host, port)
    client.send(command(b"register", name))
    assert client.frames() == [b"Hello, " + name], name
    return client


def nick(server: Server, name: str, host: str = "127.0.0.1", port: int = 2) -> Client:
    client = server.connect(host, port)
    client.send(f"!nick {name}\n".encode())
    assert client.lines()[0].startswith("!users"), name
    return client


class UserLimitTests(SynchronousTestCase):
    def test_total(self) -> None:
        server = Server(max_binary_users=2)
        register(server, b"a", host="10.0.0.1")
        register(server, b"b", host="10.0.0.2")
        client = server.connect("10.0.0.3")
        client.send(command(b"register", b"c"))
        self.assertEqual(client.frames(), [b"Server is full!"])
        self.assertTrue(client.closed)

    def test_per_host(self) -> None:
        server = Server(max_binary_users_per_host=2)
        register(server, b"a")
        register(server, b"b")
        client = server.connect()
        client.send(command(b"register", b"c"))
        self.assertEqual(client.frames(), [b"Too many users from your host!"])
        register(server, b"c", host="10.0.0.9")

    def test_claim_back_at_the_limit(self) -> None:
        server = Server(max_binary_users_per_host=1)
        register(server, b"a").close()
        again = server.connect()
        again.send(command(b"register", b"a"))
        self.assertEqual(again.frames(), [b"Nice to see you, a"])

    def test_logout_frees_a_place(self) -> None:
        server = Server(max_binary_users=1)
        first = register(server, b"a")
        first.send(command(b"logout"))
        first.take()
        register(server, b"b")


class MailboxTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.server = Server(mailbox_size=2)
        self.bob = register(self.server, b"bob", host="10.0.0.1")
        self.sender = register(self.server, b"eve", host="10.0.0.2")

    def fill(self) -> None:
        for text in (b"one", b"two"):
            self.sender.send(command(b"send", b"bob", text))
            self.assertEqual(self.sender.frames(), [b"Message added to storage!"])

    def test_send(self) -> None:
        self.fill()
        self.sender.send(command(b"send", b"bob", b"three"))
        self.assertEqual(self.sender.frames(), [b"Mailbox of 'bob' is full!"])
        self.assertFalse(self.sender.closed)
        self.bob.send(command(b"receive"))
        self.assertEqual(self.bob.frames(), [b"2", b"eve", b"one", b"eve", b"two"])

    def test_sendall_names_the_full(self) -> None:
        carol = register(self.server, b"carol", host="10.0.0.3")
        self.fill()
        self.sender.send(command(b"sendall", b"hi"))
        self.assertEqual(
            self.sender.frames(),
            [b"Message added to storage, but mailboxes of 'bob' are full!"],
        )
        carol.send(command(b"receive"))
        self.assertEqual(carol.frames(), [b"1", b"eve", b"hi"])

    def test_line_sendto_sendmsg_poke(self) -> None:
        self.fill()
        line = nick(self.server, "liz")
        for cmd in (b"!sendto bob hi\n", b"!sendmsg hi\n", b"!poke bob\n"):
            line.send(cmd)
            self.assertEqual(
                line.lines()[-1], "!error mailbox-full mailbox full, not delivered to: bob"
            )
        self.assertFalse(line.closed)
