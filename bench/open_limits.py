"""chatd options that lift every per-client limit out of a benchmark's way.

A benchmark's few load-generating connections send far faster than any
person, and from one host: with the default limits they would be slowed
(fake lag) or turned away. The limits are still checked on every command,
so what is measured is chatd as it runs, just with roomier numbers.

run.py reads this list from each tree it runs (--against), since an older
tree does not know the newer options.
"""

BIG = str(10**9)

OPEN_LIMITS = [
    "--max-connections", BIG,
    "--max-connections-per-host", BIG,
    "--command-rate", BIG,
    "--command-burst", BIG,
    "--max-input-backlog", str(64 * 1024 * 1024),
    "--max-output-backlog", str(256 * 1024 * 1024),
    "--max-binary-users", BIG,
    "--max-binary-users-per-host", BIG,
    "--mailbox-size", BIG,
    "--mailbox-share", BIG,
    "--mailbox-host-share", BIG,
    "--broadcast-rate", BIG,
    "--broadcast-burst", BIG,
    "--handshake-timeout", "600",
    "--idle-timeout", "600",
]  # fmt: skip
