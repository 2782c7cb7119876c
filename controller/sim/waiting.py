"""Bounded polling, for tests and benchmarks that wait on a fleet from outside it."""
import time


def poll(predicate, timeout, every=0.2):
    """Call predicate() every `every` s until it returns something true, and return that; None
    once `timeout` s have passed without."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            return None
        time.sleep(every)
