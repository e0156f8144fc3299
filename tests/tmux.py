"""A program running in a real terminal: tmux, on a server of its own per test."""

from __future__ import annotations

import itertools
import os
import shlex
import shutil
import subprocess
import sys

from twisted.trial.unittest import TestCase

from tests.live import eventually

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TMUX = shutil.which("tmux")
_names = itertools.count()


class Terminal:
    """One tmux session of a fixed size, running one command, read as a person would."""

    def __init__(self, case: TestCase, argv: list[str], width: int = 80, height: int = 24) -> None:
        assert TMUX is not None
        # A tmux server of its own, so no user's sessions or settings get in.
        self._tmux = [TMUX, "-L", f"chatd-test-{os.getpid()}-{next(_names)}", "-f", os.devnull]
        env = {k: v for k, v in os.environ.items() if not k.startswith("TMUX")}
        env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
        # Once the program ends, its status stays on screen until the test ends.
        script = f'{shlex.join(argv)}; echo "[exited $?]"; exec cat'
        self._run(
            "new-session", "-d", "-x", str(width), "-y", str(height), "sh", "-c", script, env=env
        )
        case.addCleanup(self._run, "kill-server")

    def _run(self, *args: str, env: dict[str, str] | None = None) -> str:
        done = subprocess.run(
            [*self._tmux, *args], env=env, capture_output=True, text=True, timeout=10, check=True
        )
        return done.stdout

    def screen(self) -> str:
        """What the terminal shows now, line by line, without trailing blanks."""
        return "\n".join(
            line.rstrip() for line in self._run("capture-pane", "-p").splitlines()
        ).rstrip()

    def type(self, text: str) -> None:
        """Type C{text} as it is, without pressing Enter."""
        self._run("send-keys", "-l", text)

    def press(self, *keys: str) -> None:
        """Press keys by tmux's names: C{Enter}, C{C-d}, C{Up}..."""
        self._run("send-keys", *keys)

    def enter(self, text: str) -> None:
        self.type(text)
        self.press("Enter")

    async def shows(self, text: str) -> str:
        """Wait until C{text} is on screen; the screen."""
        return await eventually(self.screen, lambda screen: text in screen, repr(text))


def client_argv(port: int, *args: str) -> list[str]:
    """The terminal client's command line, run from this worktree's code."""
    return [sys.executable, "-m", "chatd.client", "-a", "127.0.0.1", "-p", str(port), *args]
