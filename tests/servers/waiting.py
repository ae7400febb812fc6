"""Waiting on state that another process owns (a server, a worker), where there is no event to
wait on: poll with a deadline and fail the test with what was awaited."""

import time

import pytest


def eventually(check, timeout: float = 10.0, what: str = "condition", interval: float = 0.05):
    """Call `check()` until it returns something truthy and return that; fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout} s")
        time.sleep(interval)
