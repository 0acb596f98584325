"""Hypothesis runs the same examples everywhere: no example database, a seed per test.

A database replays failures found on one machine only on that machine, so CI and a
developer's checkout could test different cases; derandomize fixes each test's examples
from its own source instead.
"""

from hypothesis import settings

settings.register_profile("servesim", database=None, derandomize=True)
settings.load_profile("servesim")
