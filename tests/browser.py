"""The page in a real headless Chromium, driven by Selenium, against chatd under twistd.

The tests block (Selenium and the socket clients of C{tests.clients} both
do), so chatd runs in its own process: that is also how a restart is
tried for real. Chromium and its driver are Debian's C{chromium} and
C{chromium-driver}; where they are missing, the tests are skipped.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, TypeVar

from twisted.trial.unittest import SkipTest

from tests.loopback import CHECKOUT

T = TypeVar("T")

# Seconds any one wait in a browser test may take.
PATIENCE = 15.0
# The size of the window, and of the README's screenshot.
WINDOW = (900, 600)

_BROWSERS = ("chromium", "chromium-browser", "google-chrome")
_DRIVERS = ("chromedriver", "chromium-driver")


def _find(names: tuple[str, ...], extra: tuple[str, ...] = ()) -> str | None:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    return next((path for path in extra if os.access(path, os.X_OK)), None)


def browser_paths() -> tuple[str, str]:
    """Chromium and chromedriver; SkipTest, with what to install, if either is missing."""
    browser = _find(_BROWSERS)
    driver = _find(_DRIVERS, ("/usr/lib/chromium/chromedriver",))
    if browser is None or driver is None:
        raise SkipTest(
            "needs Chromium and its driver: apt-get install chromium chromium-driver"
        )
    try:
        import selenium  # noqa: F401
    except ImportError:
        raise SkipTest("needs selenium: pip install '.[test]'")
    return browser, driver


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(probe: Callable[[], T], what: str, timeout: float = PATIENCE) -> T:
    """C{probe()} once it is truthy, polled for at most C{timeout} seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except Exception as e:  # A page in the middle of changing.
            last = e
        else:
            if last:
                return last
        time.sleep(0.05)
    raise AssertionError(f"waited {timeout} s for {what}; last saw: {last!r}")


class ChatdProcess:
    """C{twistd -n chatd} from this checkout: a chat port and a web port on 127.0.0.1."""

    def __init__(self, workdir: str, chat_port: int = 0, web_port: int = 0) -> None:
        self.workdir = workdir
        self.chat_port = chat_port or free_port()
        self.web_port = web_port or free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log = os.path.join(workdir, "twistd.log")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}/"

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.chat_port)

    def start(self) -> ChatdProcess:
        argv = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
                "-n", "--pidfile=", "--logfile", self.log, "chatd",
                "--port", f"tcp:{self.chat_port}:interface=127.0.0.1",
                "--web", f"tcp:{self.web_port}:interface=127.0.0.1",
                "--line-flush", "0.05"]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": CHECKOUT}
        self.process = subprocess.Popen(
            argv, env=env, cwd=self.workdir, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for(self._serving, "chatd to listen on both ports")
        return self

    def _serving(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"chatd exited; its log:\n{self.read_log()}")
        for port in (self.chat_port, self.web_port):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)):
                    return False
        return True

    def stop(self) -> None:
        """SIGTERM, as a restart does; wait for the exit."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=PATIENCE)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def read_log(self) -> str:
        try:
            with open(self.log, encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError:
            return ""


def start_chatd(case: Any) -> ChatdProcess:
    """A chatd in a temporary directory, stopped when C{case} ends."""
    workdir = tempfile.mkdtemp(prefix="chatd-browser-")
    case.addCleanup(shutil.rmtree, workdir, True)
    chatd = ChatdProcess(workdir)
    case.addCleanup(chatd.stop)
    return chatd.start()


class Page:
    """One browser on chatd's page, found as a person (or a screen reader) finds things."""

    def __init__(self, case: Any, url: str, size: tuple[int, int] = WINDOW) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        browser, driver = browser_paths()
        # Never let Selenium Manager go looking for a driver on the network.
        os.environ.setdefault("SE_OFFLINE", "true")
        options = webdriver.ChromeOptions()
        options.binary_location = browser
        for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                         "--disable-gpu", "--no-first-run", "--disable-extensions",
                         f"--window-size={size[0]},{size[1]}", "--lang=en"):  # fmt: skip
            options.add_argument(argument)
        self.driver = webdriver.Chrome(options=options, service=Service(driver))
        case.addCleanup(self.driver.quit)
        self.driver.set_page_load_timeout(PATIENCE)
        self.driver.set_script_timeout(PATIENCE)
        if size[0] < 500:
            # Chromium's windows are at least 500 px wide: a phone's screen is emulated.
            self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
                "width": size[0], "height": size[1], "deviceScaleFactor": 2, "mobile": True,
            })  # fmt: skip
        self.url = url
        self.driver.get(url)

    # Finding things by their labels and roles

    def by_label(self, label: str) -> Any:
        from selenium.webdriver.common.by import By

        return self.driver.find_element(
            By.XPATH, f"//input[@id=//label[normalize-space()='{label}']/@for]"
        )

    def by_role(self, role: str) -> Any:
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, f'[role="{role}"]')

    def users(self) -> list[str]:
        from selenium.webdriver.common.by import By

        users = self.driver.find_element(By.CSS_SELECTOR, '[aria-label="Users"]')
        return [item.text for item in users.find_elements(By.CSS_SELECTOR, "li")]

    def user_button(self, name: str) -> Any:
        from selenium.webdriver.common.by import By

        users = self.driver.find_element(By.CSS_SELECTOR, '[aria-label="Users"]')
        return users.find_element(By.XPATH, f".//li[normalize-space()='{name}']//button")

    def state(self) -> str:
        return str(self.by_role("status").text)

    def log_lines(self) -> list[str]:
        """The conversation, an entry a line, as the user reads it."""
        from selenium.webdriver.common.by import By

        log = self.by_role("log")
        return [item.text for item in log.find_elements(By.CSS_SELECTOR, "li")]

    def field_error(self) -> str:
        """The text next to the nickname field that says what is wrong with it."""
        field = self.by_label("Nickname")
        described = field.get_attribute("aria-describedby")
        return str(self.driver.find_element("id", described).text)

    # Doing things as a person does

    def type_into(self, label: str, text: str, enter: bool = True) -> None:
        from selenium.webdriver.common.keys import Keys

        field = self.by_label(label)
        field.clear()
        field.send_keys(text + (Keys.ENTER if enter else ""))

    def join(self, nick: str) -> None:
        self.type_into("Nickname", nick)
        wait_for(lambda: f"Connected as {nick}" in self.state(), f"{nick} to join")

    def say(self, text: str) -> None:
        self.type_into("Message", text)

    def wait_for_line(self, pattern: str, what: str | None = None) -> str:
        """The first conversation entry that matches the regular expression C{pattern}."""
        regex = re.compile(pattern)

        def found() -> str | None:
            return next((line for line in self.log_lines() if regex.search(line)), None)

        return wait_for(found, what or f"an entry matching {pattern!r}")

    def wait_for_users(self, names: list[str]) -> None:
        wait_for(lambda: self.users() == names, f"the user list to be {names}")

    def run(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)
