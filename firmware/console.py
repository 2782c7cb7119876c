# The node's console: every line the runtime says about itself (supervisor restarts, worker
# errors, link up and down, updates, events) goes through say(). It prints the line to the real
# console (the serial port, stdout, journald) and, once the node has set up a ring, keeps it in
# RAM for the delivery task to publish on PREFIX/node/ID/log (docs/protocol.md, kind "log").
#
# Console lines are never written to flash. The ring is bounded: a line that comes while it is
# full (the link is down, or lines come faster than the rate lets them out) pushes out the
# oldest, and the next batch says how many were lost.
from .clock import ticks_diff

# Longest line kept for the log topic; the real console still gets the whole line. The
# protocol holds every line of a `log` message to this (firmware/protocol.py).
LINE_CHARS = 160

ring = None   # the running node's Ring; while None (tools, tests, before boot) say() only prints


def say(text):
    print(text)
    if ring is not None:
        ring.keep(text)


class Ring:
    """The last `size` console lines, oldest first, and a token bucket that lets `rate` lines a
    second out, with bursts of up to `burst`.

    The slots are allocated once; keeping a line stores only a reference to its string, and the
    bucket counts in integers (thousandths of a line), which a board's VM stores without
    allocating: nothing on the heap grows with the lines that pass, beyond the strings held."""

    def __init__(self, size, rate, burst):
        self.slots = [None] * size
        self.first = 0        # slot of the oldest line
        self.count = 0
        self.dropped = 0      # lines lost since the last batch that reported them
        self.rate = rate
        self.burst = burst
        self.tokens = burst * 1000
        self.filled_at = None  # ticks_ms of the last refill; None: the bucket starts full

    def keep(self, text):
        size = len(self.slots)
        if self.count == size:
            self.first = (self.first + 1) % size
            self.count -= 1
            self.dropped += 1
        self.slots[(self.first + self.count) % size] = text[:LINE_CHARS] if len(text) > LINE_CHARS else text
        self.count += 1

    def take(self, most, now_ms):
        """Remove and return up to `most` of the oldest lines (a list, or an empty tuple), as many
        as the bucket holds at `now_ms` (clock.ticks_ms)."""
        full = self.burst * 1000
        if self.filled_at is not None:
            # ms times lines a second is thousandths of a line; capped before the product, so
            # it stays a small integer however long the node went without taking.
            self.tokens = min(full, self.tokens + min(ticks_diff(now_ms, self.filled_at), full) * self.rate)
        self.filled_at = now_ms
        n = min(self.count, most, self.tokens // 1000)
        if n <= 0:
            return ()   # nothing new on the heap while the rate holds lines back
        lines = [None] * n
        for i in range(n):
            lines[i] = self.slots[self.first]
            self.slots[self.first] = None
            self.first = (self.first + 1) % len(self.slots)
        self.count -= n
        self.tokens -= n * 1000
        return lines
