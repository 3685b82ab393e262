"""Waiting on conditions instead of sleeping for a guessed time.

A loaded 2-core CI machine can be many times slower than a laptop: a test waits for what
it needs to see, with a deadline generous enough never to be the reason it fails, and
fails with what it saw last.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

DEADLINE_SECONDS = 60.0


def wait_until(read: Callable[[], T], done: Callable[[T], bool] = bool, *,
               timeout: float = DEADLINE_SECONDS, interval: float = 0.1,
               what: str = "the condition") -> T:
    """Call ``read`` until ``done(value)`` holds; return that value. Past ``timeout``
    seconds, fail naming ``what`` and the last value read."""
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout:.0f}s for {what}; last seen: {value!r}")
        time.sleep(interval)
