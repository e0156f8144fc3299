"""The PyChat line protocol, row by row: PROTOCOL.md section 3, and section 2 as seen through it."""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tests.support import Client, Server, command

COMMANDS = {
    "!nick",
    "!changenickname",
    "!users",
    "!sendmsg",
    "!sendto",
    "!poke",
    "!help",
    "!quit",
}

# Rows of (argument or line, the error code it gets).
Table = tuple[tuple[str, str], ...]

# Names that break section 2, and the error each gets.
BAD_NAMES = (
    ("abcdefghi", "bad-name"),  # 9 characters
    ("ééééééééé", "bad-name"),  # 9 characters, 18 bytes
    ("a\x00b", "bad-name"),
    ("a\x1bb", "bad-name"),  # ESC
    ("a\x7fb", "bad-name"),  # DEL
    ("a\x9bb", "bad-name"),  # C1 CSI
    # NEL is white space to Python, so it splits the line into two words.
    ("a\x85b", "bad-arguments"),
)

# Message texts that break section 2, and the error each gets.
BAD_TEXTS = (
    ("", "bad-message"),
    ("   ", "bad-message"),
    ("a\x00b", "bad-message"),
    ("\x1b[31mred", "bad-message"),  # ESC
    ("a\x7fb", "bad-message"),  # DEL
    ("a\x85b", "bad-message"),  # C1 NEL
    ("\x9b31mred", "bad-message"),  # C1 CSI
    ("x" * 61, "message-too-long"),
    ("é" * 61, "message-too-long"),
)

# Texts at the limits of section 2 that must go through unchanged.
GOOD_TEXTS = ("x" * 60, "é" * 60, "👋" * 60, "hi 👋🏽 Zoë")


def with_command(command_: str, table: Table) -> Table:
    """A table of (argument, error code) turned into (line, error code)."""
    return tuple((f"{command_} {argument}", code) for argument, code in table)


def say(client: Client, line: str) -> list[str]:
    """Send one LF-ended line; return what the server answered the sender."""
    client.send(line.encode("utf-8") + b"\n")
    return client.lines()


def call(client: Client, *parts: str) -> list[str]:
    """Send one binary command; return its reply frames as text."""
    client.send(command(*(part.encode("utf-8") for part in parts)))
    return [payload.decode("utf-8") for payload in client.frames()]


class LineTestCase(SynchronousTestCase):
    """A fresh server per test, and the clients it made."""

    def setUp(self) -> None:
        # Some tests send a row of commands at once: more than a burst.
        self.server = Server(command_burst=100)
        self.clients: list[Client] = []

    def connect(self) -> Client:
        client = self.server.connect()
        self.clients.append(client)
        return client

    def named(self, name: str) -> Client:
        client = self.connect()
        client.send(f"!nick {name}\n".encode("utf-8"))
        return client

    def users(self, *names: str) -> list[Client]:
        """Line users that join in this order; everything sent so far is read."""
        joined = [self.named(name) for name in names]
        self.settle()
        return joined

    def binary(self, name: str) -> Client:
        """A binary user registered through the binary protocol."""
        client = self.connect()
        self.assertEqual(call(client, "register", name), [f"Hello, {name}"])
        self.settle()
        return client

    def settle(self) -> None:
        """Forget what every client has been sent so far."""
        for client in self.clients:
            client.take()

    def assertSilent(self, *clients: Client) -> None:
        for client in clients:
            self.assertEqual(client.take(), b"")

    def assertErrorLine(self, answer: list[str], code: str) -> None:
        """C{answer} is one C{!error CODE human text} line."""
        self.assertEqual(len(answer), 1, answer)
        prefix = f"!error {code} "
        self.assertTrue(answer[0].startswith(prefix), answer)
        self.assertTrue(answer[0][len(prefix) :].strip(), answer)

    def assertError(
        self, client: Client, line: str, code: str, closed: bool = False
    ) -> None:
        """C{line} gets the error C{code}; the connection is then closed or open."""
        self.assertErrorLine(say(client, line), code)
        self.assertEqual(client.closed, closed)

    def assertErrors(self, client: Client, table: Table) -> None:
        """Each line of C{table} gets its error code; the connection stays open."""
        for line, code in table:
            with self.subTest(line=line):
                self.assertError(client, line, code)

    def assertPassesGoodTexts(
        self, sender: Client, command_: str, receiver: Client, shown: str
    ) -> None:
        """Texts at the limits go through unchanged: C{receiver} is shown C{shown TEXT}."""
        for text in GOOD_TEXTS:
            with self.subTest(text=text):
                self.assertEqual(say(sender, f"{command_} {text}"), [])
                self.assertEqual(receiver.lines(), [f"{shown} {text}"])

    def assertMail(self, client: Client, *mail: tuple[str, str]) -> None:
        """A binary user's C{receive} gives exactly C{mail}, oldest first."""
        expected = [str(len(mail))] + [part for entry in mail for part in entry]
        self.assertEqual(call(client, "receive"), expected)

    def assertUsers(self, client: Client, *names: str) -> None:
        self.assertEqual(say(client, "!users"), [" ".join(["!users", str(len(names)), *names])])


class NickTests(LineTestCase):
    """C{!nick NAME}: the users reply, C{!joined}, and refusals."""

    def test_users_reply_counts_the_sender(self) -> None:
        client = self.connect()
        self.assertEqual(say(client, "!nick ann"), ["!users 1 ann"])

    def test_users_reply_in_order_of_arrival_with_binary_users(self) -> None:
        self.users("ann")
        self.binary("bob")
        cy = self.connect()
        self.assertEqual(say(cy, "!nick cy"), ["!users 3 ann bob cy"])

    def test_joined_to_every_other_line_user(self) -> None:
        ann, bob = self.users("ann", "bob")
        nameless = self.connect()
        binary = self.binary("dee")
        self.assertEqual(say(self.connect(), "!nick cy"), ["!users 4 ann bob dee cy"])
        self.assertEqual(ann.lines(), ["!joined cy"])
        self.assertEqual(bob.lines(), ["!joined cy"])
        self.assertSilent(nameless, binary)

    def test_nameless_connection_is_not_a_user(self) -> None:
        nameless = self.connect()
        self.assertEqual(say(self.connect(), "!nick ann"), ["!users 1 ann"])
        self.assertSilent(nameless)

    def test_utf8_names_shown_as_registered(self) -> None:
        (ann,) = self.users("ann")
        for name in ("Zoë", "ÉÉÉÉÉÉÉÉ", "🙂"):
            with self.subTest(name=name):
                self.assertEqual(say(self.connect(), f"!nick {name}")[0].split()[-1], name)
                self.assertEqual(ann.lines(), [f"!joined {name}"])

    def test_name_length_limit_is_configurable(self) -> None:
        self.server = Server(max_name_length=3)
        client = self.connect()
        self.assertError(client, "!nick anna", "bad-name")
        self.assertEqual(say(client, "!nick ann"), ["!users 1 ann"])

    def test_refused_nick_leaves_connection_open_for_another_try(self) -> None:
        (ann,) = self.users("ann")
        self.binary("Bob")
        client = self.connect()
        refused = BAD_NAMES + (
            ("ann", "name-taken"),
            ("ANN", "name-taken"),  # names clash case-insensitively
            ("bob", "name-taken"),  # held by a binary user
            ("", "bad-arguments"),
            ("a b", "bad-arguments"),
        )
        self.assertErrors(client, with_command("!nick", refused))
        self.assertSilent(ann)
        self.assertEqual(say(client, "!nick cy"), ["!users 3 ann Bob cy"])
        self.assertEqual(ann.lines(), ["!joined cy"])

    def test_second_nick_is_bad_arguments(self) -> None:
        ann, bob = self.users("ann", "bob")
        self.assertError(ann, "!nick anna", "bad-arguments")
        self.assertSilent(bob)
        self.assertUsers(ann, "ann", "bob")

    def test_nick_word_is_case_insensitive_and_spaces_are_trimmed(self) -> None:
        self.assertEqual(say(self.connect(), "  !NICK   ann  "), ["!users 1 ann"])


class BeforeNickTests(LineTestCase):
    """Only C{!nick}, C{!help} and C{!quit} may come before a name."""

    def test_other_commands_close_with_nick_required(self) -> None:
        (ann,) = self.users("ann")
        lines = (
            "!users",
            "!changenickname bob",
            "!sendmsg hi",
            "!sendto ann hi",
            "!poke ann",
            "!bogus",
            "hello",
        )
        for line in lines:
            with self.subTest(line=line):
                self.assertError(self.connect(), line, "nick-required", closed=True)
        self.assertSilent(ann)

    def test_nothing_after_nick_required_is_read(self) -> None:
        (ann,) = self.users("ann")
        client = self.connect()
        client.send(b"!users\n!nick bob\n!sendmsg hi\n")
        self.assertErrorLine(client.lines(), "nick-required")
        self.assertSilent(ann)
        self.assertUsers(ann, "ann")

    def test_help_before_nick(self) -> None:
        client = self.connect()
        self.assertEqual({line.split()[1] for line in say(client, "!help")}, COMMANDS)
        self.assertFalse(client.closed)
        self.assertEqual(say(client, "!nick ann"), ["!users 1 ann"])

    def test_quit_before_nick(self) -> None:
        (ann,) = self.users("ann")
        client = self.connect()
        self.assertEqual(say(client, "!quit"), [])
        self.assertTrue(client.closed)
        client.close()
        self.assertSilent(ann)

    def test_blank_lines_are_ignored(self) -> None:
        client = self.connect()
        client.send(b"\n\r\n  \t \n")
        self.assertEqual(client.lines(), [])
        self.assertFalse(client.closed)
        self.assertEqual(say(client, "!nick ann"), ["!users 1 ann"])


class ChangeNicknameTests(LineTestCase):
    """C{!changenickname NEW}."""

    def test_told_to_every_line_user_and_the_sender(self) -> None:
        ann, bob = self.users("ann", "bob")
        nameless = self.connect()
        binary = self.binary("cy")
        self.assertEqual(say(ann, "!changenickname Zoë"), ["!changenickname ann Zoë"])
        self.assertEqual(bob.lines(), ["!changenickname ann Zoë"])
        self.assertSilent(nameless, binary)
        # The new name keeps its place in the order of arrival.
        self.assertUsers(bob, "Zoë", "bob", "cy")

    def test_case_change_of_own_name(self) -> None:
        ann, bob = self.users("ann", "bob")
        self.assertEqual(say(ann, "!changenickname ANN"), ["!changenickname ann ANN"])
        self.assertEqual(bob.lines(), ["!changenickname ann ANN"])
        self.assertUsers(bob, "ANN", "bob")

    def test_old_name_is_free_again(self) -> None:
        (ann,) = self.users("ann")
        say(ann, "!changenickname anna")
        self.assertEqual(say(self.connect(), "!nick ann"), ["!users 2 anna ann"])

    def test_refused(self) -> None:
        ann, bob = self.users("ann", "bob")
        self.binary("cy")
        refused = BAD_NAMES + (
            ("bob", "name-taken"),
            ("BOB", "name-taken"),
            ("Cy", "name-taken"),  # held by a binary user
            ("", "bad-arguments"),
            ("x y", "bad-arguments"),
        )
        self.assertErrors(ann, with_command("!changenickname", refused))
        self.assertSilent(bob)
        self.assertUsers(ann, "ann", "bob", "cy")


class UsersTests(LineTestCase):
    """C{!users}: one list for both protocols."""

    def test_lists_users_of_both_protocols_in_order_of_arrival(self) -> None:
        (ann,) = self.users("ann")
        self.binary("bob")
        self.users("cy")
        self.assertUsers(ann, "ann", "bob", "cy")

    def test_who_leaves_the_list(self) -> None:
        ann, bob = self.users("ann", "bob")
        offline = self.binary("cy")
        logged_out = self.binary("dee")
        offline.close()  # offline without logout: still a user
        self.assertEqual(call(logged_out, "logout"), ["U've been successfully logouted"])
        bob.close()
        self.assertEqual(ann.lines(), ["!left dee", "!left bob"])
        self.assertUsers(ann, "ann", "cy")


class SendmsgTests(LineTestCase):
    """C{!sendmsg TEXT}."""

    def test_to_every_other_user(self) -> None:
        ann, bob, cy = self.users("ann", "bob", "cy")
        nameless = self.connect()
        binary = self.binary("dee")
        self.assertEqual(say(ann, "!sendmsg   hello, all  "), [])
        for line_user in (bob, cy):
            self.assertEqual(line_user.lines(), ["!msg ann hello, all"])
        self.assertSilent(nameless)
        self.assertMail(binary, ("ann", "hello, all"))

    def test_texts_at_the_limits(self) -> None:
        ann, bob = self.users("ann", "bob")
        self.assertPassesGoodTexts(ann, "!sendmsg", bob, "!msg ann")

    def test_refused_texts(self) -> None:
        ann, bob = self.users("ann", "bob")
        binary = self.binary("cy")
        self.assertErrors(ann, with_command("!sendmsg", BAD_TEXTS))
        self.assertSilent(bob)
        self.assertMail(binary)

    def test_message_length_limit_is_configurable(self) -> None:
        self.server = Server(max_message_length=3)
        ann, bob = self.users("ann", "bob")
        self.assertError(ann, "!sendmsg four", "message-too-long")
        say(ann, "!sendmsg éé!")
        self.assertEqual(bob.lines(), ["!msg ann éé!"])


class PokeTests(LineTestCase):
    """C{!poke NAME}."""

    def setUp(self) -> None:
        super().setUp()
        self.ann, self.bob = self.users("ann", "bob")
        self.nameless = self.connect()
        self.cy = self.binary("cy")

    def test_told_to_every_line_user_and_the_sender(self) -> None:
        self.assertEqual(say(self.ann, "!poke BOB"), ["!poke ann bob"])
        self.assertEqual(self.bob.lines(), ["!poke ann bob"])
        self.assertSilent(self.nameless)
        self.assertMail(self.cy)

    def test_binary_user_gets_mail(self) -> None:
        self.assertEqual(say(self.ann, "!poke cy"), ["!poke ann cy"])
        self.assertEqual(self.bob.lines(), ["!poke ann cy"])
        self.assertMail(self.cy, ("ann", "!poke ann cy"))

    def test_refused(self) -> None:
        refused = (("nobody", "no-such-user"), ("", "bad-arguments"), ("bob cy", "bad-arguments"))
        self.assertErrors(self.ann, with_command("!poke", refused))
        self.assertSilent(self.bob, self.nameless)
        self.assertMail(self.cy)


class SendtoTests(LineTestCase):
    """C{!sendto NAME TEXT}, answered by C{!privmsg}."""

    def setUp(self) -> None:
        super().setUp()
        self.ann, self.bob, self.cy = self.users("ann", "bob", "cy")
        self.dee = self.binary("dee")

    def test_to_a_line_user_alone(self) -> None:
        self.assertEqual(say(self.ann, "!sendto BOB   just for you  "), [])
        self.assertEqual(self.bob.lines(), ["!privmsg ann just for you"])
        self.assertSilent(self.cy)
        self.assertMail(self.dee)

    def test_to_a_binary_user_alone(self) -> None:
        self.assertEqual(say(self.ann, "!sendto dee psst 👋"), [])
        self.assertMail(self.dee, ("ann", "psst 👋"))
        self.assertSilent(self.bob, self.cy)

    def test_texts_at_the_limits(self) -> None:
        self.assertPassesGoodTexts(self.ann, "!sendto bob", self.bob, "!privmsg ann")

    def test_refused(self) -> None:
        refused = with_command("!sendto bob", BAD_TEXTS) + (
            ("!sendto nobody hi", "no-such-user"),
            ("!sendto", "bad-arguments"),
        )
        self.assertErrors(self.ann, refused)
        self.assertSilent(self.bob, self.cy)
        self.assertMail(self.dee)


class HelpTests(LineTestCase):
    """C{!help}."""

    def test_one_line_per_command_named_with_its_bang(self) -> None:
        (ann,) = self.users("ann")
        answer = say(ann, "!help")
        self.assertEqual(len(answer), len(COMMANDS))
        for line in answer:
            word, command_, description = line.split(None, 2)
            self.assertEqual(word, "!help")
            self.assertIn(command_, COMMANDS)
            self.assertTrue(description)
        self.assertEqual({line.split()[1] for line in answer}, COMMANDS)


class LeavingTests(LineTestCase):
    """C{!quit}, disconnects, and C{!left}."""

    def test_quit_closes_and_others_get_left_once(self) -> None:
        ann, bob = self.users("ann", "bob")
        nameless = self.connect()
        self.assertEqual(say(ann, "!quit"), [])
        self.assertTrue(ann.closed)
        ann.close()
        self.assertEqual(bob.lines(), ["!left ann"])
        self.assertSilent(nameless)
        self.assertEqual(say(self.connect(), "!nick ann"), ["!users 2 bob ann"])

    def test_disconnect_tells_others_left(self) -> None:
        ann, bob = self.users("ann", "bob")
        say(ann, "!changenickname anna")
        bob.take()
        ann.close()
        self.assertEqual(bob.lines(), ["!left anna"])
        self.assertUsers(bob, "bob")

    def test_connection_without_a_name_leaves_silently(self) -> None:
        (ann,) = self.users("ann")
        refused = self.connect()
        self.assertError(refused, "!nick ann", "name-taken")
        refused.close()
        self.connect().close()
        self.assertSilent(ann)
        self.assertUsers(ann, "ann")

    def test_binary_users_join_and_leave(self) -> None:
        (ann,) = self.users("ann")
        bob = self.connect()
        self.assertEqual(call(bob, "register", "bob"), ["Hello, bob"])
        self.assertEqual(ann.lines(), ["!joined bob"])
        call(bob, "logout")
        self.assertEqual(ann.lines(), ["!left bob"])

    def test_binary_user_offline_stays(self) -> None:
        (ann,) = self.users("ann")
        self.binary("bob").close()
        self.assertSilent(ann)
        self.assertError(self.connect(), "!nick BOB", "name-taken")

    def test_binary_messages_are_pushed_to_line_users(self) -> None:
        ann, bob = self.users("ann", "bob")
        cy = self.binary("cy")
        call(cy, "sendall", "hi all")
        call(cy, "send", "ann", "hi ann")
        self.assertEqual(ann.lines(), ["!msg cy hi all", "!privmsg cy hi ann"])
        self.assertEqual(bob.lines(), ["!msg cy hi all"])


class LineErrorTests(LineTestCase):
    """Errors of the line itself: unknown commands, encoding, length."""

    def test_unknown_command_leaves_connection_open(self) -> None:
        ann, bob = self.users("ann", "bob")
        lines = ("!bogus", "hello there", "!msg bob hi", "!")
        self.assertErrors(ann, tuple((line, "unknown-command") for line in lines))
        self.assertSilent(bob)

    def test_bad_encoding_leaves_connection_open(self) -> None:
        client = self.connect()
        client.send(b"!nick \xff\n")
        self.assertErrorLine(client.lines(), "bad-encoding")
        self.assertEqual(say(client, "!nick ann"), ["!users 1 ann"])
        client.send(b"!sendmsg caf\xe9\n")  # Latin-1, not UTF-8
        self.assertErrorLine(client.lines(), "bad-encoding")
        self.assertFalse(client.closed)
        self.assertUsers(client, "ann")

    def test_cr_before_lf_is_dropped(self) -> None:
        ann, bob = self.users("ann", "bob")
        client = self.connect()
        client.send(b"!nick cy\r\n!sendmsg hi\r\n")
        self.assertEqual(client.lines(), ["!users 3 ann bob cy"])
        self.assertEqual(bob.lines(), ["!joined cy", "!msg cy hi"])

    def test_line_of_exactly_the_limit_is_accepted(self) -> None:
        (ann,) = self.users("ann")
        line = b"!users".ljust(1024)
        for end in (b"\n", b"\r\n"):
            with self.subTest(end=end):
                ann.send(line + end)
                self.assertEqual(ann.lines(), ["!users 1 ann"])

    def test_line_over_the_limit_closes(self) -> None:
        for end in (b"\n", b"\r\n"):
            with self.subTest(end=end):
                (ann,) = self.users("ann")
                ann.send(b"!users".ljust(1025) + end)
                self.assertErrorLine(ann.lines(), "line-too-long")
                self.assertTrue(ann.closed)
                ann.close()

    def test_unended_line_over_the_limit_closes_at_once(self) -> None:
        client = self.connect()
        client.send(b"!nick " + b"x" * 2000)
        self.assertErrorLine(client.lines(), "line-too-long")
        self.assertTrue(client.closed)

    def test_line_length_counted_in_bytes(self) -> None:
        self.server = Server(max_line_length=16)
        ann, bob = self.users("ann", "bob")
        say(ann, "!sendmsg ééé")  # 15 bytes
        self.assertEqual(bob.lines(), ["!msg ann ééé"])
        self.assertError(ann, "!sendmsg éééé", "line-too-long", closed=True)  # 17 bytes

    def test_every_server_line_ends_with_lf(self) -> None:
        (ann,) = self.users("ann")
        self.binary("bob")
        client = self.connect()
        client.send(
            "!help\r\n!nick Zoë\r\n!users\r\n!poke ann\r\n!bogus\r\n!quit\r\n".encode()
        )
        output = client.take()
        self.assertTrue(output.endswith(b"\n"))
        self.assertNotIn(b"\r", output)
        lines = output.split(b"\n")[:-1]
        self.assertEqual(len(lines), len(COMMANDS) + 4)
        self.assertEqual(
            [line.decode().split()[0] for line in lines[len(COMMANDS) :]],
            ["!users", "!users", "!poke", "!error"],
        )


class FramingTests(LineTestCase):
    """Bytes split anywhere give the same answers."""

    SCRIPT = (
        "!nick Zoë!\r\n"  # a '!' inside the first line, and a CR
        "!users\n"
        "!sendmsg   hi 👋 there!  \n"
        "!poke bob\n"
        "!sendto cy psst\n"
        "!changenickname zed\n"
        "!bogus\n"
    ).encode("utf-8") + b"\xff\n!quit\n"

    def run_script(self, chunks: list[bytes]) -> tuple[list[str], list[str], list[str]]:
        """Feed the script in C{chunks}; what its client, a line user and a binary user got."""
        self.setUp()  # a fresh server for each run
        (bob,) = self.users("bob")
        cy = self.binary("cy")
        client = self.connect()
        for chunk in chunks:
            client.send(chunk)
        self.assertTrue(client.closed)
        return client.lines(), bob.lines(), call(cy, "receive")

    def test_whole_script_in_one_segment(self) -> None:
        mine, bob, cy = self.run_script([self.SCRIPT])
        self.assertEqual(
            [line for line in mine if not line.startswith("!error")],
            [
                "!users 3 bob cy Zoë!",
                "!users 3 bob cy Zoë!",
                "!poke Zoë! bob",
                "!changenickname Zoë! zed",
            ],
        )
        self.assertEqual(
            [line.split()[1] for line in mine if line.startswith("!error")],
            ["unknown-command", "bad-encoding"],
        )
        self.assertEqual(
            bob,
            [
                "!joined Zoë!",
                "!msg Zoë! hi 👋 there!",
                "!poke Zoë! bob",
                "!changenickname Zoë! zed",
                "!left zed",
            ],
        )
        self.assertEqual(cy, ["2", "Zoë!", "hi 👋 there!", "Zoë!", "psst"])

    def test_split_at_every_byte_boundary(self) -> None:
        whole = self.run_script([self.SCRIPT])
        for at in range(1, len(self.SCRIPT)):
            with self.subTest(at=at):
                chunks = [self.SCRIPT[:at], self.SCRIPT[at:]]
                self.assertEqual(self.run_script(chunks), whole)

    def test_one_byte_at_a_time_after_the_first_line(self) -> None:
        # Before its first LF a client cannot be told from PyChat's, whose
        # reads are whole commands: a lone "!" there would start a new one.
        whole = self.run_script([self.SCRIPT])
        first, rest = self.SCRIPT.split(b"\n", 1)
        bytewise = [first + b"\n"] + [rest[i : i + 1] for i in range(len(rest))]
        self.assertEqual(self.run_script(bytewise), whole)


class LineFlushTests(LineTestCase):
    """A partial line is taken as whole after C{line_flush} seconds, for PyChat's client."""

    def answer_after(self, client: Client, data: bytes, seconds: float) -> list[str]:
        """Send C{data}; nothing comes until C{seconds} have passed, then the answer."""
        client.send(data)
        self.server.clock.advance(seconds - 0.01)
        self.assertEqual(client.lines(), [])
        self.server.clock.advance(0.01)
        return client.lines()

    def test_partial_line_is_answered_after_line_flush(self) -> None:
        self.assertEqual(self.answer_after(self.connect(), b"!nick ann", 0.3), ["!users 1 ann"])

    def test_line_flush_is_configurable(self) -> None:
        self.server = Server(line_flush=2.0)
        self.assertEqual(self.answer_after(self.connect(), b"!nick ann", 2.0), ["!users 1 ann"])

    def test_more_bytes_restart_the_wait(self) -> None:
        client = self.connect()
        client.send(b"!nick a")
        self.server.clock.advance(0.2)
        self.assertEqual(self.answer_after(client, b"nn", 0.3), ["!users 1 ann"])

    def test_pychat_client_served_command_after_command(self) -> None:
        (bob,) = self.users("bob")
        client = self.connect()
        client.send(b"!nick ann")
        client.send(b"!users")
        self.assertEqual(client.lines(), ["!users 2 bob ann"])
        self.assertEqual(bob.lines(), ["!joined ann"])
        client.send(b"!sendmsg hi !")
        self.assertEqual(client.lines(), ["!users 2 bob ann"])
        self.assertEqual(self.answer_after(client, b"!poke bob", 0.3), ["!poke ann bob"])
        self.assertEqual(bob.lines(), ["!msg ann hi !", "!poke ann bob"])

    def test_ended_lines_never_wait(self) -> None:
        (bob,) = self.users("bob")
        client = self.connect()
        client.send(b"!nick ann\n!sendmsg hi\n")
        self.assertEqual(client.lines(), ["!users 2 bob ann"])
        self.assertEqual(bob.lines(), ["!joined ann", "!msg ann hi"])
        self.assertEqual(self.server.clock.getDelayedCalls(), [])

    def test_client_that_ends_lines_is_never_cut_by_the_clock(self) -> None:
        ann, bob = self.users("ann", "bob")
        ann.send("!sendmsg Zo".encode())
        self.server.clock.advance(5)
        ann.send("ë here\n".encode())
        self.assertEqual(ann.lines(), [])
        self.assertEqual(bob.lines(), ["!msg ann Zoë here"])

    def test_partial_line_over_the_limit_closes_when_flushed(self) -> None:
        client = self.connect()
        self.assertErrorLine(self.answer_after(client, b"x" * 1025, 0.3), "line-too-long")
        self.assertTrue(client.closed)


class PendingNameTests(LineTestCase):
    """With several nodes a name is decided by the database: what the
    client sends meanwhile waits, framed as ever, and bounded."""

    def pending_join(self) -> list[Any]:
        """Make the hub's joins wait: each call's Deferred and arguments, to fire by hand."""
        from twisted.internet.defer import Deferred

        hub = self.server.hub
        waiting: list[Any] = []
        join = hub.join_line

        def later(name: str, session: Any) -> Deferred[Any]:
            d: Deferred[Any] = Deferred()
            waiting.append((d, lambda: join(name, session)))
            return d

        hub.join_line = later  # type: ignore[method-assign]
        return waiting

    def test_pychat_commands_sent_while_the_name_is_decided(self) -> None:
        waiting = self.pending_join()
        client = self.connect()
        client.send(b"!nick ann")
        client.send(b"!users")
        client.send(b"!users")
        self.assertEqual(client.lines(), [])
        ((d, join),) = waiting
        d.callback(join())
        # The answer to !nick, then each !users as its own command: the
        # last one once the line-flush time has passed, as ever.
        self.assertEqual(client.lines(), ["!users 1 ann"] * 2)
        self.server.clock.advance(self.server.hub.limits.line_flush)
        self.assertEqual(client.lines(), ["!users 1 ann"])

    def test_what_waits_is_bounded(self) -> None:
        self.server = Server(max_input_backlog=100)
        self.pending_join()
        client = self.connect()
        client.send(b"!nick ann\n")
        client.send(b"!users\n" * 20)
        self.assertTrue(client.closed)
