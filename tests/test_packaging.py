"""chatd installed into a fresh virtual environment, then run there by twistd.

A plugin the package does not ship, or that twistd cannot find, shows only
once the project is installed (HABITS.md 8 and 9), so this test installs a
copy of the checkout and runs what it installed.
"""

from __future__ import annotations

import atexit
import configparser
import functools
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import BinaryIO

import twisted
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.clients import attempts, chat_across_protocols

REPO = Path(__file__).resolve().parents[1]

# What a checkout may hold beside the project: a build must not see it.
_NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__",
    "_trial_temp*", ".pytest_cache", ".hypothesis", "dropin.cache",
)
# The environment of every child: nothing from this process may leak onto its sys.path.
_ENV = {
    name: value
    for name, value in os.environ.items()
    if name not in {"PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV"}
} | {"PIP_NO_INPUT": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
# Seconds one step (creating the venv, installing, one twistd run) may take.
STEP = 45
# Whether the new environment can build chatd's wheel without downloading
# anything: a setuptools new enough for pyproject.toml that builds wheels.
_BUILDS_OFFLINE = """
import importlib.util, sys, setuptools
new_enough = int(setuptools.__version__.split(".")[0]) >= 61
builds_wheels = importlib.util.find_spec("wheel") or importlib.util.find_spec(
    "setuptools.command.bdist_wheel"
)
sys.exit(not (new_enough and builds_wheels))
"""
# twistd as its console script runs it: the venv may see Twisted's scripts only elsewhere.
_TWISTD = ("-c", "from twisted.scripts.twistd import run; run()")


class Venv:
    """A virtual environment in a temporary directory, its children run from there."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.python = str(root / "venv" / "bin" / "python")

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.python, *args], cwd=self.root, env=_ENV,
            capture_output=True, text=True, timeout=STEP,
        )

    def check(self, *args: str) -> str:
        """Run the venv's python with C{args}; fail unless it succeeds; its output."""
        done = self.run(*args)
        if done.returncode:
            raise AssertionError(f"{args} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
        return done.stdout

    @functools.cached_property
    def site(self) -> Path:
        """The venv's own site-packages, where chatd is installed."""
        return Path(self.check("-c", "import sysconfig; print(sysconfig.get_path('purelib'))").strip())

    def twistd(self, *args: str, log: BinaryIO) -> subprocess.Popen[bytes]:
        """twistd started with C{args}, its output going to C{log}."""
        return subprocess.Popen(
            [self.python, *_TWISTD, *args], cwd=self.root, env=_ENV,
            stdout=log, stderr=subprocess.STDOUT,
        )


@functools.lru_cache(maxsize=None)
def installed() -> Venv:
    """One venv per test run, with chatd installed from a copy of this checkout."""
    root = Path(tempfile.mkdtemp(prefix="chatd-packaging-"))
    atexit.register(shutil.rmtree, root, True)
    made = subprocess.run(
        [sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(root / "venv")],
        env=_ENV, capture_output=True, text=True, timeout=STEP,
    )
    if made.returncode:
        raise SkipTest(f"cannot create a virtual environment: {made.stderr.strip()}")
    venv = Venv(root)
    if venv.run("-m", "pip", "--version").returncode:
        # No pip to borrow from the system site-packages: the venv gets its own.
        venv.check("-m", "ensurepip")
    if venv.run("-c", "import twisted").returncode:
        # This python is itself a venv: lend the new one its Twisted rather
        # than download it. chatd installed here comes first all the same.
        (venv.site / "lent-twisted.pth").write_text(f"{Path(twisted.__file__).parents[1]}\n")
    source = root / "source"
    shutil.copytree(REPO, source, ignore=_NOT_SOURCE)
    offline = ["--no-build-isolation"] if venv.run("-c", _BUILDS_OFFLINE).returncode == 0 else []
    venv.check("-m", "pip", "install", "--no-deps", "--force-reinstall", *offline, str(source))
    return venv


class SourceTreeTests(SynchronousTestCase):
    def test_packages_are_listed_by_hand(self) -> None:
        config = configparser.ConfigParser()
        config.read(REPO / "setup.cfg")
        packages = config["options"]["packages"]
        self.assertNotIn("find:", packages)
        ours = sorted(
            ".".join(init.parent.relative_to(REPO).parts)
            for init in (REPO / "chatd").rglob("__init__.py")
        )
        self.assertEqual(sorted(packages.split()), sorted([*ours, "twisted.plugins"]))

    def test_no_init_under_twisted(self) -> None:
        self.assertEqual(list((REPO / "twisted").rglob("__init__.py")), [])


class InstalledTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.venv = installed()

    def test_plugin_installed_beside_chatd(self) -> None:
        self.assertTrue((self.venv.site / "twisted" / "plugins" / "chatd_plugin.py").is_file())
        self.assertEqual(
            self.venv.check("-c", "import chatd; print(chatd.__file__)").strip(),
            str(self.venv.site / "chatd" / "__init__.py"),
        )
        files = self.venv.check(
            "-c", "from importlib.metadata import files; print(*files('chatd'), sep='\\n')"
        ).split()
        self.assertIn("twisted/plugins/chatd_plugin.py", files)
        # Twisted's own package must stay Twisted's.
        self.assertNotIn("twisted/__init__.py", files)
        self.assertNotIn("twisted/plugins/__init__.py", files)

    def test_twistd_lists_chatd_whatever_the_plugin_cache(self) -> None:
        cache = self.venv.site / "twisted" / "plugins" / "dropin.cache"
        an_hour_ago = time.time() - 3600
        for name, content in [
            ("none", None),
            ("garbage", b"not a pickle\x00\xff"),
            ("stale, from before chatd was installed", pickle.dumps({})),
        ]:
            if content is not None:
                cache.write_bytes(content)
                os.utime(cache, (an_hour_ago, an_hour_ago))
            listing = self.venv.check(*_TWISTD, "--help")
            self.assertRegex(listing, r"(?m)^\s+chatd\s", f"cache: {name}")

    def test_twistd_serves_both_protocols_until_sigterm(self) -> None:
        run = Path(tempfile.mkdtemp(prefix="run-", dir=self.venv.root))
        line, binary, web = (str(run / f"{name}.sock") for name in ("line", "binary", "web"))
        log = (run / "twistd.log").open("wb")
        self.addCleanup(log.close)
        twistd = self.venv.twistd(
            "-n", "--pidfile=", "chatd", "--line-flush", "0.05",
            "--port", f"unix:{line}", "--port", f"unix:{binary}", "--web", f"unix:{web}",
            # The installed package must carry its schema files.
            "--database", str(run / "chatd.sqlite"),
            log=log,
        )
        self.addCleanup(_end, twistd)
        logged = (run / "twistd.log").read_text

        for _ in attempts(timeout=STEP, tries=STEP * 10):
            if twistd.poll() is not None or all(map(_accepts, [line, binary])):
                break
            time.sleep(0.1)
        self.assertTrue(all(map(_accepts, [line, binary, web])), logged())
        # Two endpoints, one hub: each client sees the other.
        chat_across_protocols(self, line, binary)
        # The installed package carries the web page's files.
        for path, kind in [("/", "text/html"), ("/app.js", "text/javascript"),
                           ("/style.css", "text/css")]:
            status, headers, body = _get(web, path)
            self.assertEqual((status, headers.get("content-type", "").split(";")[0]),
                             (200, kind), path)
            self.assertGreater(len(body), 100, path)

        twistd.send_signal(signal.SIGTERM)
        # twistd stops its services, then ends by the signal it was sent.
        self.assertEqual(twistd.wait(timeout=5), -signal.SIGTERM, logged())
        self.assertIn("Server Shut Down.", logged())
        self.assertTrue((run / "chatd.sqlite").stat().st_size > 0)


def _get(path: str, resource: str) -> tuple[int, dict[str, str], bytes]:
    """An HTTP GET over a Unix socket: status, headers (lower-case names), body."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(STEP)
        sock.connect(path)
        sock.sendall(f"GET {resource} HTTP/1.0\r\nHost: localhost\r\n\r\n".encode())
        answer = b""
        for _ in attempts(timeout=STEP, tries=10_000):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = dict((k.strip().lower(), v.strip()) for k, _, v in (h.partition(":") for h in lines))
    return int(status_line.split()[1]), headers, body


def _accepts(path: str) -> bool:
    with socket.socket(socket.AF_UNIX) as sock:
        return sock.connect_ex(path) == 0


def _end(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
        process.wait(timeout=STEP)
