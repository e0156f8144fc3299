"""C{chatd-client [-a HOST] [-p PORT] [-n NICK]}: chat on a PyChat-protocol server."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from twisted.python import usage

from chatd.client.line import DEFAULT_PORT


class Options(usage.Options):
    synopsis = "Usage: chatd-client [-a HOST] [-p PORT] [-n NICK]"
    longdesc = (
        "Chat on a chatd, or any server of PyChat's ! line protocol. "
        "Without --nick, asks for one."
    )
    optParameters: list[list[Any]] = [
        ["address", "a", "localhost", "The server's host name or address."],
        ["port", "p", DEFAULT_PORT, "The server's port.", int],
        ["nick", "n", None, "Your nick."],
    ]


def main(argv: list[str] | None = None) -> None:
    config = Options()
    try:
        config.parseOptions(sys.argv[1:] if argv is None else argv)
    except usage.UsageError as e:
        sys.exit(f"{config}\nchatd-client: {e}")
    # prompt_toolkit runs on asyncio: run Twisted on the same loop, before
    # anything imports the default reactor.
    from twisted.internet import asyncioreactor

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    asyncioreactor.install(loop)
    from twisted.internet import task

    task.react(_run, [config])


def _run(reactor: Any, config: Options) -> Any:
    from twisted.internet.defer import Deferred

    from chatd.client.terminal import Chat

    chat = Chat(reactor, config["address"], config["port"])
    d = Deferred.fromFuture(asyncio.ensure_future(chat.run(config["nick"])))
    return d.addCallback(_exit)


def _exit(status: int) -> None:
    # Raised in a callback, not in asyncio's task, which would re-raise it
    # out of the event loop.
    if status:
        raise SystemExit(status)


if __name__ == "__main__":
    main()
