"""chatd's tests: twisted.trial TestCases, run by both pytest and trial."""

from hypothesis import settings

# Deterministic: the same examples on every machine and every run, no deadline
# on a shared, noisy CI box.
settings.register_profile("chatd", derandomize=True, deadline=None, max_examples=200)
settings.load_profile("chatd")
