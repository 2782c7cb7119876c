# The node's console: every line the runtime says about itself (supervisor restarts, worker
# errors, link up and down, updates, events) goes through say(). It prints the line to the real
# console (the serial port, stdout, journald) and, once the node has set up the ring, keeps it
# in RAM; firmware/logship.py publishes it on PREFIX/node/ID/log (docs/protocol.md, kind "log").
#
# Console lines are never written to flash. The ring is bounded: a line that comes while it is
# full (the link is down, or lines come faster than the rate lets them out) pushes out the
# oldest, and the next message says how many were lost. Only this much stays in a board's heap;
# the sending code loads while lines wait and leaves with the last of them.
#
# The ring is this module's state rather than an object's: on a board a class and its instance
# cost more heap than the few lines of code they would organise.

# Longest line kept for the log topic; the real console still gets the whole line.
LINE_CHARS = 160

slots = None   # the ring's slots, allocated once at boot (firmware/bootguard.py); None: say() only prints
first = 0      # slot of the oldest line
count = 0      # lines held
dropped = 0    # lines lost and not yet reported
# The token bucket firmware/logship.py paces the lines with: its level in thousandths of a line
# (integers, which a board's VM holds without allocating), and the ticks_ms of its last refill
# (None: none yet, it starts full).
tokens = 0
at = None


def say(text):
    """Print a line and keep it in the ring; keeping stores a reference to the string and
    nothing else."""
    global first, count, dropped
    print(text)
    if slots:
        size = len(slots)
        if count == size:
            first = (first + 1) % size
            count -= 1
            dropped += 1
        slots[(first + count) % size] = text[:LINE_CHARS] if len(text) > LINE_CHARS else text
        count += 1
