# The console's ring (firmware/console.py) and the rate limiter that lets its lines out
# (firmware/logship.py), under CPython and MicroPython.
import gc

from firmware import console, protocol
from firmware.console import LINE_CHARS, say
from firmware.logship import take


def _ring(size):
    """An empty ring of `size` lines, as the node's boot sets one up."""
    console.slots = [None] * size
    console.first = console.count = console.dropped = console.tokens = 0
    console.at = None
    return console


def test_a_full_ring_drops_the_oldest_and_counts_them():
    ring = _ring(4)
    for i in range(10):
        say("line %d" % i)
    assert ring.count == 4 and ring.dropped == 6
    assert take(8, 0) == ["line 6", "line 7", "line 8", "line 9"]
    assert ring.count == 0 and not take(8, 0)
    say("after")
    assert take(8, 0) == ["after"]


def test_the_bucket_lets_a_burst_out_then_the_rate():
    ring = _ring(64)
    for i in range(40):
        say("l%d" % i)
    # A full bucket: the burst goes at once, in batches of at most `most`.
    assert len(take(8, 1000)) == 8
    assert len(take(8, 1000)) == 2
    assert not take(8, 1000)
    # 5 lines a second: 199 ms earn nothing whole, 200 ms one line, a second five.
    assert not take(8, 1199)
    assert take(8, 1200) == ["l10"]
    assert len(take(8, 2200)) == 5
    # A long pause refills to the burst, never beyond it.
    assert len(take(64, 100000)) == 10
    assert ring.count == 40 - 26 and ring.dropped == 0


def test_lines_are_cut_to_the_stated_length_and_one_always_fits_a_message():
    _ring(2)
    say("\u00e9\"" * 200)
    line = take(1, 0)[0]
    assert len(line) == LINE_CHARS
    # The worst a line escapes to (6 bytes a character) still fits a message of its own.
    msg = {"v": 1, "node": "a" * 32, "boot": 2 ** 62, "up": 2 ** 62, "lines": ["\x01" * LINE_CHARS], "dropped": 2 ** 62}
    assert protocol.decode("log", protocol.encode("log", msg))["lines"] == msg["lines"]


def test_keeping_lines_allocates_nothing_beyond_the_strings():
    _ring(16)
    lines = ["console line %d" % i for i in range(64)]   # made before measuring: the caller's strings
    for line in lines[:16]:
        say(line)
    take(8, 0)
    gc.collect()
    if not hasattr(gc, "mem_alloc"):
        return   # CPython has no heap counter; MicroPython runs the measurement
    keep = console.say
    console.print = lambda text: None   # the real console's buffers are not the ring's
    try:
        before = gc.mem_alloc()
        i = 16
        while i < 64:   # a while loop: a for over range() would allocate the range itself
            keep(lines[i])
            i += 1
        take(0, 100000)   # the bucket's refill
        kept = gc.mem_alloc() - before
    finally:
        del console.print
    assert kept == 0, "keeping 48 lines and refilling the bucket allocated %d bytes" % kept
    # A batch is one new list of its lines (firmware/logship.py turns it into a message): the
    # list, its slots and the loop's range; none of it outlives the batch.
    before = gc.mem_alloc()
    assert len(take(8, 100000)) == 8
    batch = gc.mem_alloc() - before
    assert batch <= 192, "a batch of 8 lines cost %d bytes" % batch


def test_say_only_prints_until_the_ring_is_set_up():
    console.slots = None
    say("before any ring")
    assert console.count == 0
    _ring(4)
    say("kept")
    assert take(4, 0) == ["kept"]
