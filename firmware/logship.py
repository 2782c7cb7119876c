# Publishes the console ring's lines (firmware/console.py) as `log` messages, at a steady rate,
# while the link is up. Loaded while lines wait and released once the ring is empty
# (firmware/node.py publish_log): a quiet board holds none of this in its heap.
from . import console, protocol, release_module
from .clock import ticks_diff, ticks_ms
from .errors import MQTTError, ProtocolError

# Console lines in one message, at most: 8 plain lines of 160 characters fit its 2048 bytes.
BATCH_LINES = 8
# The token bucket: lines a second, and the most let out at once after a quiet spell.
RATE = 5
BURST = 10


def take(most, now_ms, rate=RATE, burst=BURST):
    """Remove and return up to `most` of the ring's oldest lines (a list, or an empty tuple),
    as many as the bucket holds at `now_ms` (clock.ticks_ms)."""
    c = console
    full = burst * 1000
    if c.at is None:
        c.tokens = full
    else:
        # ms times lines a second is thousandths of a line; capped before the product, so it
        # stays a small integer however long the node went without taking.
        c.tokens = min(full, c.tokens + min(ticks_diff(now_ms, c.at), full) * rate)
    c.at = now_ms
    n = min(c.count, most, c.tokens // 1000)
    if n <= 0:
        return ()   # nothing new on the heap while the rate holds lines back
    slots = c.slots
    lines = [None] * n
    for i in range(n):
        lines[i] = slots[c.first]
        slots[c.first] = None
        c.first = (c.first + 1) % len(slots)
    c.count -= n
    c.tokens -= n * 1000
    return lines


async def send(node):
    """One message of what the rate lets out now; this module leaves the heap with the ring's
    last line. Lines it cannot send (a failed publish, or text that escapes past the size
    limit) are counted as dropped, like those the ring pushed out."""
    try:
        await _send(node)
    finally:
        if not console.count:
            import sys
            release_module(sys.modules[__name__])


async def _send(node):
    lines = take(BATCH_LINES, ticks_ms())
    dropped = console.dropped
    if not lines and not dropped:
        return   # the rate holds the lines back for now
    msg = {"v": protocol.VERSION, "node": node.id, "boot": node.boot, "up": node.uptime_ms(), "lines": lines or []}
    if dropped:
        msg["dropped"] = dropped
    try:
        await node.client.publish(node.topic("log"), protocol.encode("log", msg), 0, False)
    except (MQTTError, ProtocolError):
        console.dropped += len(lines)   # on MQTTError the link task reconnects
        return
    console.dropped -= dropped   # keeps what the ring lost while this message went out
