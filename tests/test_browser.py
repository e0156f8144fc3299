"""chatd's web page in a real headless Chromium: what a person in a browser sees and does."""

from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase

from tests.browser import WINDOW, ChatdProcess, Page, browser_paths, start_chatd, wait_for
from tests.clients import ADDED, ASVTClient, PyChatClient
from tests.loopback import CHECKOUT

# Set to write the README's screenshot, docs/screenshot.png, from this run.
SCREENSHOT = os.environ.get("CHATD_SCREENSHOT")


class BrowserTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        browser_paths()
        self.chatd = start_chatd(self)

    def page(self, size: tuple[int, int] = WINDOW) -> Page:
        return Page(self, self.chatd.url, size)


class ChatTests(BrowserTestCase):
    def test_browsers_chat_with_each_other_and_both_socket_protocols(self) -> None:
        alice = self.page()
        self.assertEqual(alice.state(), "Not connected: choose a nickname to join")
        alice.join("alice")
        self.assertEqual(alice.users(), ["alice"])

        bob = self.page()
        # Refused names are said next to the field, and the user tries again.
        bob.type_into("Nickname", "Alice")
        wait_for(lambda: "already" in bob.field_error() or "taken" in bob.field_error(),
                 "the taken name to be refused")  # fmt: skip
        bob.type_into("Nickname", "far-too-long-a-name")
        wait_for(lambda: bob.field_error() and "Alice" not in bob.field_error(),
                 "the long name to be refused")  # fmt: skip
        bob.type_into("Nickname", "b o b")
        self.assertIn("spaces", bob.field_error())
        bob.join("bob")
        alice.wait_for_users(["alice", "bob"])
        alice.wait_for_line(r"--> bob joined$")

        with PyChatClient(self.chatd.address) as liz, ASVTClient(self.chatd.address) as carl:
            self.assertEqual(liz.nick("liz"), ["!users 3 alice bob liz"])
            self.assertEqual(carl.register("carl"), "Hello, carl")
            for page in (alice, bob):
                page.wait_for_users(["alice", "bob", "liz", "carl"])
                page.wait_for_line(r"--> liz joined$")
                page.wait_for_line(r"--> carl joined$")

            # Said to everyone, shown as text, never as markup.
            alice.say("hi <b>all</b> & bob")
            bob.wait_for_line(r"^\d\d:\d\d <alice> hi <b>all</b> & bob$")
            alice.wait_for_line(r"^\d\d:\d\d <alice> hi <b>all</b> & bob$")
            self.assertEqual(bob.run("return document.querySelectorAll('[role=log] b').length"), 0)
            self.assertEqual(liz.lines(2), ["!joined carl", "!msg alice hi <b>all</b> & bob"])
            self.assertEqual(carl.receive_until(1), [("alice", "hi <b>all</b> & bob")])

            # Clicking a name starts a private message to it.
            bob.user_button("alice").click()
            self.assertEqual(bob.by_label("Message").get_attribute("value"), "/msg alice ")
            bob.by_label("Message").send_keys("psst\n")
            alice.wait_for_line(r"\*bob\* psst$")
            bob.wait_for_line(r"-> \*alice\* psst$")

            liz.send("!sendmsg hello from a terminal\n")
            alice.wait_for_line(r"<liz> hello from a terminal$")
            self.assertEqual(carl.send("bob", "hi from a script"), ADDED)
            bob.wait_for_line(r"\*carl\* hi from a script$")
            self.assertEqual(carl.sendall("hi all from a script"), ADDED)
            alice.wait_for_line(r"<carl> hi all from a script$")

            # /msg to a script, which polls its mailbox for it.
            alice.say("/msg carl to your mailbox")
            self.assertEqual(carl.receive_until(2)[-1], ("alice", "to your mailbox"))

            bob.say("/poke alice")
            alice.wait_for_line(r"\* bob pokes you!$")
            bob.wait_for_line(r"\* bob pokes alice!$")
            if SCREENSHOT:
                alice.driver.save_screenshot(SCREENSHOT)

            alice.say("/msg nobody hello")
            alice.wait_for_line(r"!! .*nobody")
            alice.say("/frobnicate")
            alice.wait_for_line(r"!! no command /frobnicate; /help lists them$")
            alice.say("/help")
            alice.wait_for_line(r"-- /poke NAME +poke NAME, for everyone to see$")
            alice.say("/users")
            alice.wait_for_line(r"-- 4 online: alice, bob, liz, carl$")

            liz.send("!changenickname lizzy\n")
            alice.wait_for_line(r"-- liz is now known as lizzy$")
            alice.wait_for_users(["alice", "bob", "lizzy", "carl"])
            bob.say("/nick robert")
            bob.wait_for_line(r"-- you are now known as robert$")
            alice.wait_for_line(r"-- bob is now known as robert$")
            wait_for(lambda: bob.state() == "Connected as robert", "bob's new name")

            self.assertEqual(carl.logout(), "U've been successfully logouted")
        alice.wait_for_line(r"<-- carl left$")
        alice.wait_for_line(r"<-- lizzy left$")
        alice.wait_for_users(["alice", "robert"])
        bob.say("/quit")
        alice.wait_for_users(["alice"])
        self.assertEqual(bob.by_label("Nickname").is_displayed(), True)


class RestartTests(BrowserTestCase):
    def test_page_says_the_server_went_away_and_rejoins_with_its_name(self) -> None:
        alice = self.page()
        alice.join("alice")
        self.chatd.stop()
        wait_for(lambda: alice.state().startswith("Disconnected"), "the page to see the loss")
        alice.wait_for_line(r"!! lost the connection to the server$")
        self.assertIn("Disconnected", alice.by_role("status").text)

        again = ChatdProcess(self.chatd.workdir, self.chatd.chat_port, self.chatd.web_port)
        self.addCleanup(again.stop)
        again.start()
        wait_for(lambda: alice.state() == "Connected as alice", "the page to rejoin", timeout=20)
        alice.wait_for_line(r"-- reconnected as alice$")
        with PyChatClient(again.address) as liz:
            self.assertEqual(liz.nick("liz"), ["!users 2 alice liz"])
            alice.wait_for_users(["alice", "liz"])
            liz.send("!sendmsg welcome back\n")
            alice.wait_for_line(r"<liz> welcome back$")


class ReadingTests(BrowserTestCase):
    def test_phone_sized_keyboard_only_history_and_attention(self) -> None:
        phone = self.page(size=(375, 740))
        # The nickname field has the focus; Enter joins, and the focus moves on.
        phone.driver.switch_to.active_element.send_keys("ann\n")
        wait_for(lambda: phone.state() == "Connected as ann", "ann to join")
        active = phone.driver.switch_to.active_element
        self.assertEqual(active.get_attribute("id"), phone.by_label("Message").get_attribute("id"))
        active.send_keys("typed without a mouse\n")
        phone.wait_for_line(r"<ann> typed without a mouse$")
        # Nothing wider than the screen.
        self.assertEqual(phone.run("return window.innerWidth"), 375)
        self.assertLessEqual(phone.run("return document.documentElement.scrollWidth"), 375)
        for element in (phone.by_label("Message"), phone.by_role("log"), phone.by_label("Message")):
            self.assertTrue(element.is_displayed())

        # Notifications, where the user allowed them: recorded, not shown.
        phone.run("""
            window.notes = [];
            const Real = window.Notification;
            class Recorded { constructor(title, options) { window.notes.push([title, options.body]); }
                             addEventListener() {} close() {} }
            Object.defineProperty(Recorded, 'permission', { get: () => 'granted' });
            window.Notification = Recorded;
        """)
        with PyChatClient(self.chatd.address) as liz:
            liz.nick("liz")
            phone.wait_for_users(["ann", "liz"])
            # From the message field, back to the last name in the list; Enter on it.
            from selenium.webdriver.common.keys import Keys

            phone.by_label("Message").send_keys(Keys.SHIFT, Keys.TAB)
            self.assertEqual(phone.driver.switch_to.active_element.text, "liz")
            phone.driver.switch_to.active_element.send_keys(Keys.ENTER)
            active = phone.driver.switch_to.active_element
            self.assertEqual(active.get_attribute("value"), "/msg liz ")
            active.send_keys("by keyboard\n")
            self.assertEqual(liz.lines(1), ["!privmsg ann by keyboard"])
            # Private ones: broadcasts from one host are held to a few a second.
            for i in range(60):
                liz.send(f"!sendto ann line {i}\n")
            phone.wait_for_line(r"\*liz\* line 59$")
            at_bottom = "const l = document.querySelector('[role=log]'); return l.scrollHeight - l.scrollTop - l.clientHeight"
            wait_for(lambda: phone.run(at_bottom) < 5, "the log to follow the conversation")
            # Reading back: a new message does not move the view, a control does.
            phone.run("document.querySelector('[role=log]').scrollTop = 0")
            liz.send("!sendmsg while you read\n")
            phone.wait_for_line(r"<liz> while you read$")
            self.assertEqual(phone.run("return document.querySelector('[role=log]').scrollTop"), 0)
            button = wait_for(lambda: _shown_button(phone, "new message"), "the new-messages control")
            button.click()
            wait_for(lambda: phone.run(at_bottom) < 5, "the control to go to the bottom")
            self.assertFalse(button.is_displayed())

            # A poke raises a notification.
            liz.send("!poke ann\n")
            phone.wait_for_line(r"\* liz pokes you!$")
            wait_for(lambda: phone.run("return window.notes"), "a notification")
            self.assertEqual(phone.run("return window.notes"), [["liz pokes you!", "on chatd"]])

            # While the tab is hidden: a private message notifies, and the title counts.
            phone.run("""
                Object.defineProperty(document, 'hidden', { configurable: true, get: () => true });
                document.hasFocus = () => false;
            """)
            liz.send("!sendto ann are you there?\n")
            liz.send("!sendmsg anyone?\n")
            wait_for(lambda: phone.driver.title == "(2) chatd", "the title to count unread")
            self.assertEqual(phone.run("return window.notes")[-1],
                             ["Private message from liz", "are you there?"])  # fmt: skip
            phone.run("""
                delete document.hidden;
                document.hasFocus = () => true;
                document.dispatchEvent(new Event('visibilitychange'));
            """)
            wait_for(lambda: phone.driver.title == "chatd", "the title to be read")


def _shown_button(page: Page, text: str) -> object:
    from selenium.webdriver.common.by import By

    for button in page.driver.find_elements(By.TAG_NAME, "button"):
        if button.is_displayed() and text in button.text.lower():
            return button
    return None


class ScreenshotTests(SynchronousTestCase):
    def test_screenshot_is_a_small_png(self) -> None:
        path = os.path.join(CHECKOUT, "docs", "screenshot.png")
        with open(path, "rb") as f:
            data = f.read()
        self.assertEqual(data[:8], b"\x89PNG\r\n\x1a\n")
        self.assertLess(len(data), 200_000)
