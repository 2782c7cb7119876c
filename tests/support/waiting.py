"""Bounded polling for end-to-end tests."""
import time


def wait_until(predicate, timeout, what):
    """Poll predicate() until it returns something true, and return that; fail after timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError("timed out after %.0f s waiting for %s" % (timeout, what))
