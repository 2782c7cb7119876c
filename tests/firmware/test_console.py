# The console's ring and rate limiter (firmware/console.py), under CPython and MicroPython.
import gc

from firmware import console, protocol
from firmware.console import LINE_CHARS, Ring


def test_a_full_ring_drops_the_oldest_and_counts_them():
    ring = Ring(4, 5, 10)
    for i in range(10):
        ring.keep("line %d" % i)
    assert ring.count == 4 and ring.dropped == 6
    assert ring.take(8, 0) == ["line 6", "line 7", "line 8", "line 9"]
    assert ring.count == 0 and not ring.take(8, 0)
    ring.keep("after")
    assert ring.take(8, 0) == ["after"]


def test_the_bucket_lets_a_burst_out_then_the_rate():
    ring = Ring(64, 5, 10)
    for i in range(40):
        ring.keep("l%d" % i)
    # A full bucket: the burst goes at once, in batches of at most `most`.
    assert len(ring.take(8, 1000)) == 8
    assert len(ring.take(8, 1000)) == 2
    assert not ring.take(8, 1000)
    # 5 lines a second: 199 ms earn nothing whole, 200 ms one line, a second five.
    assert not ring.take(8, 1199)
    assert ring.take(8, 1200) == ["l10"]
    assert len(ring.take(8, 2200)) == 5
    # A long pause refills to the burst, never beyond it.
    assert len(ring.take(64, 100000)) == 10
    assert ring.count == 40 - 26 and ring.dropped == 0


def test_lines_are_cut_to_the_stated_length_and_fit_a_message():
    ring = Ring(2, 5, 10)
    ring.keep("\u00e9\"" * 200)
    line = ring.take(1, 0)[0]
    assert len(line) == LINE_CHARS
    # The worst case a message must carry: a batch of such lines is refused by size, one alone is not.
    msg = {"v": 1, "node": "mcu-1", "boot": 1, "up": 5, "lines": [line], "dropped": 3}
    assert protocol.decode("log", protocol.encode("log", msg))["lines"] == [line]


def test_keeping_lines_allocates_nothing_beyond_the_strings():
    ring = Ring(16, 5, 10)
    lines = ["console line %d" % i for i in range(64)]   # made before measuring: the caller's strings
    for line in lines[:16]:
        ring.keep(line)
    ring.take(8, 0)
    gc.collect()
    if not hasattr(gc, "mem_alloc"):
        return   # CPython has no heap counter; MicroPython runs the measurement
    before = gc.mem_alloc()
    i = 16
    while i < 64:   # a while loop: a for over range() would allocate the range itself
        ring.keep(lines[i])
        i += 1
    ring.take(0, 100000)   # the bucket's refill
    kept = gc.mem_alloc() - before
    assert kept == 0, "keeping 48 lines and refilling the bucket allocated %d bytes" % kept
    # A batch is one new list of its lines (firmware/node.py turns it into a message): the list,
    # its slots and the loop's range, 160 bytes on the unix port; none of it outlives the batch.
    before = gc.mem_alloc()
    assert len(ring.take(8, 100000)) == 8
    batch = gc.mem_alloc() - before
    assert batch <= 192, "a batch of 8 lines cost %d bytes" % batch


def test_say_prints_and_keeps_only_once_a_ring_is_set():
    saved = console.ring
    try:
        console.ring = None
        console.say("before any ring")
        console.ring = Ring(4, 5, 10)
        console.say("kept")
        assert console.ring.take(4, 0) == ["kept"]
    finally:
        console.ring = saved
