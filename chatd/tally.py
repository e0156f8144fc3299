"""What happened, counted in plain ints on the reactor thread, for the metrics.

The hub, the factory and the protocols count here as things happen; an
increment of an int is all the hot path pays. C{chatd.metrics} reads the
counts when it is scraped, on the reactor thread too, so it never sees one
half made.
"""

from __future__ import annotations

from collections import defaultdict

from chatd.rules import Ending

# Why a connection ended: one reason per way, the label values of
# chatd_connections_closed_total. The client's own doing:
CLIENT_CLOSED = "client-closed"
QUIT = "quit"
# The connection was lost uncleanly (reset, TLS failure) without chatd closing it.
ERROR = "error"
# chatd's doing, one per limit or rule:
SERVER_FULL = "server-full"
HOST_FULL = "host-full"
HANDSHAKE_TIMEOUT = "handshake-timeout"
IDLE_TIMEOUT = "idle-timeout"
FLOOD = "flood"
SLOW_READER = "slow-reader"
LINE_TOO_LONG = "line-too-long"
FRAME_TOO_LONG = "frame-too-long"
NICK_REQUIRED = "nick-required"
UNKNOWN_COMMAND = "unknown-command"
REFUSED = "refused"
SHUTDOWN = "shutdown"
# Several nodes: this node lost contact with the database past its lease.
NODE_LOST = "node-lost"

REASONS = (
    CLIENT_CLOSED, QUIT, ERROR, SERVER_FULL, HOST_FULL, HANDSHAKE_TIMEOUT,
    IDLE_TIMEOUT, FLOOD, SLOW_READER, LINE_TOO_LONG, FRAME_TOO_LONG,
    NICK_REQUIRED, UNKNOWN_COMMAND, REFUSED, SHUTDOWN, NODE_LOST,
)

# The reason an ending for a limit gives, unless a more precise one came first
# (a timeout is the handshake's or the idle one; full is in all or per host).
ENDINGS: dict[Ending, str] = {
    Ending.SERVER_FULL: SERVER_FULL,
    Ending.TIMEOUT: HANDSHAKE_TIMEOUT,
    Ending.FLOOD: FLOOD,
    Ending.SERVER_SHUTDOWN: SHUTDOWN,
    Ending.NODE_LOST: NODE_LOST,
}

# The limit (a field of Limits, an option of twistd chatd) behind a reason.
LIMITS: dict[str, str] = {
    SERVER_FULL: "max_connections",
    HOST_FULL: "max_connections_per_host",
    HANDSHAKE_TIMEOUT: "handshake_timeout",
    IDLE_TIMEOUT: "idle_timeout",
    FLOOD: "max_input_backlog",
    SLOW_READER: "max_output_backlog",
    LINE_TOO_LONG: "max_line_length",
    FRAME_TOO_LONG: "max_frame_length",
}

# The label value of a command chatd does not know: never the client's word.
UNKNOWN = "unknown"


def command_key(protocol: str, command: str, result: str) -> str:
    """The key under which a command is counted: its labels in one string.

    A string, made once per command and result, hashes once: a tuple would
    be hashed again at every count, and commands are the hot path.
    """
    return f"{protocol} {command} {result}"


class Tally:
    """The counts behind chatd's counters; every one only ever goes up."""

    __slots__ = ("pushed", "mailed", "mailbox_full", "commands", "closed")

    def __init__(self) -> None:
        # Messages delivered: pushed to a line user, or put in a mailbox.
        self.pushed = 0
        self.mailed = 0
        # Messages not put in a mailbox because it was full, one per recipient.
        self.mailbox_full = 0
        # By command_key(protocol, command, "ok" or "error").
        self.commands: defaultdict[str, int] = defaultdict(int)
        # Connections ended, by reason.
        self.closed: defaultdict[str, int] = defaultdict(int)
