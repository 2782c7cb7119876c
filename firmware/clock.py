# Millisecond ticks on both runtimes: MicroPython's wrapping time.ticks_* where they exist,
# a monotonic-clock equivalent on CPython.
import time

if hasattr(time, "ticks_ms"):
    ticks_ms = time.ticks_ms
    ticks_us = time.ticks_us
    ticks_diff = time.ticks_diff
    ticks_add = time.ticks_add
else:
    def ticks_ms():
        return int(time.monotonic() * 1000)

    def ticks_us():
        return int(time.monotonic() * 1000000)

    def ticks_diff(a, b):
        return a - b

    def ticks_add(a, delta):
        return a + delta
