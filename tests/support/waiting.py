"""Bounded polling for end-to-end tests."""
from edgefleet.controller.sim.waiting import poll


def wait_until(predicate, timeout, what):
    """Poll predicate() until it returns something true, and return that; fail after timeout."""
    value = poll(predicate, timeout)
    if not value:
        raise AssertionError("timed out after %.0f s waiting for %s" % (timeout, what))
    return value
