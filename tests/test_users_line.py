"""The !users reply from the hub's encoded names is the one PROTOCOL.md gives."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from chatd.hub import Hub

NAMES = st.sampled_from(["ann", "Bob", "zoë", "привет", "👋x"])
# Arrivals of both protocols, departures and renames, in any order.
STEPS = st.lists(
    st.tuples(st.sampled_from(["line", "binary", "leave", "rename"]), NAMES), max_size=20
)


class Quiet:
    def deliver(self, data: bytes) -> None:
        pass


def expected(hub: Hub) -> bytes:
    names = hub.names()
    return (" ".join(["!users", str(len(names)), *names]) + "\n").encode("utf-8")


class UsersLineTests(SynchronousTestCase):
    def test_no_users(self) -> None:
        self.assertEqual(Hub().users_line(), b"!users 0\n")

    @given(STEPS)
    def test_same_as_built_from_the_names(self, steps: list[tuple[str, str]]) -> None:
        hub = Hub()
        for step, name in steps:
            user = hub.find(name)
            if step == "line" and user is None:
                hub.join_line(name, Quiet())
            elif step == "binary" and user is None:
                hub.register(name, "host")
            elif step == "leave" and user is not None:
                hub.leave(user)
            elif step == "rename" and user is not None and hasattr(user, "session"):
                new = name.upper() + "2"
                if hub.find(new) is None:
                    hub.rename(user, new)  # type: ignore[arg-type]
            self.assertEqual(hub.users_line(), expected(hub))
