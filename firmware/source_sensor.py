# A `sensor` input source: windows of readings from one of the board's sensors (an ADC channel,
# an I2C device through its driver, an I2S microphone; the board's HAL opens it, boards/hal*.py
# `sensor`), sampled at a rate, each reading scaled to the model's input and quantised to int8,
# a window every `hop` readings. A sensor read one reading at a time comes as a function; one
# that delivers blocks (a microphone's DMA buffer) as an object with readinto(buf), filling buf
# with 16-bit signed little-endian samples at its own rate_hz.
#
#   input = { kind = "sensor", sensor = "adc0", rate_hz = 200, hop = 32,
#             scale = 0.0000153, offset = -0.5 }
#
# A reading r (an ADC's 0..65535) is the value r * scale + offset, which the model's input
# quantisation (scale s, zero point z) makes round(value / s) + z, clamped to int8. The window is
# the model's input size. Positions count windows from the assignment's `input.start`.
#
# No allocation in steady state on a microcontroller: the reading-to-int8 step is one integer
# multiply-add and shift on small ints (a float would be a heap object per reading), into a
# preallocated ring that is copied out byte by byte (a slice would be a new object).
import asyncio

from .clock import ticks_diff, ticks_us
from .sources import SourceError

MAX_RATE_HZ = 20000
# Readings are at most this (an ADC's read_u16), so reading * multiplier stays a small int.
MAX_READING = 65535
# A MicroPython small int on a 32-bit port holds 31 bits with its sign.
SMALL_INT = 1 << 30
# Readings taken in one go before the worker's loop gets a turn.
MOST_AT_ONCE = 256


def _number(value):
    return type(value) in (int, float)


def fixed_point(gain, bias):
    """(multiplier, added, shift) with (r * multiplier + added) >> shift == round(r * gain + bias)
    for every reading r in 0..MAX_READING, all of it in small ints; SourceError when the gain
    and bias leave too few bits for the quantisation to mean anything."""
    shift = 24
    while shift >= 4:
        one = 1 << shift
        multiplier = int(round(gain * one))
        added = int(round(bias * one)) + one // 2
        if abs(multiplier) * MAX_READING + abs(added) < SMALL_INT:
            return multiplier, added, shift
        shift -= 1
    raise SourceError("sensor scale/offset give model inputs far outside int8 (gain %g, bias %g)" % (gain, bias))


class SensorSource:
    live = True

    def __init__(self, spec, model, hal):
        for key in ("sensor", "rate_hz"):
            if key not in spec:
                raise SourceError("a sensor input needs '%s'" % key)
        self.name = spec["sensor"]
        if type(self.name) is not str:
            raise SourceError("input.sensor must be a sensor's name")
        rate = spec["rate_hz"]
        if not _number(rate) or not 0 < rate <= MAX_RATE_HZ:
            raise SourceError("input.rate_hz must be a number above 0, at most %d" % MAX_RATE_HZ)
        window = model.input_size
        self.hop = spec.get("hop", window)
        if type(self.hop) is not int or not 1 <= self.hop <= window:
            raise SourceError("input.hop must be an integer from 1 to the window (%d readings)" % window)
        scale, offset = spec.get("scale", 1.0), spec.get("offset", 0.0)
        if not _number(scale) or not _number(offset):
            raise SourceError("input.scale and input.offset must be numbers")
        in_scale, zero_point = model.input_quant[0], model.input_quant[1]
        self.multiplier, self.added, self.shift = fixed_point(scale / in_scale, offset / in_scale + zero_point)
        try:
            self.read = hal.sensor(self.name)
        except OSError as e:
            raise SourceError("sensor %r: %s" % (self.name, e))
        self.block = None
        if hasattr(self.read, "readinto"):
            self.block, self.read = self.read, None
            if rate != self.block.rate_hz:
                raise SourceError("sensor %r samples at %d Hz: input.rate_hz must say so" % (self.name, self.block.rate_hz))
            # Made once: a block of a window (the first fill) and of a hop, viewed without copies.
            self.raw = bytearray(2 * window)
            self.raw_window = memoryview(self.raw)
            self.raw_hop = self.raw_window[:2 * self.hop]
        self.period_us = max(1, int(1000000 / rate))
        self.window = window
        self.ring = bytearray(window)
        self.head = 0            # where the next reading goes; the window starts there
        self.filled = 0          # readings in the ring, up to the window
        self.since = 0           # readings since the last window
        self.pos = spec.get("start", 0)
        self.next_us = ticks_us()

    def sample(self, count):
        """Take `count` readings into the ring; True once a window is due. A block sensor is
        read a window (the first fill) or a hop at a time."""
        read, ring, window = self.read, self.ring, self.window
        multiplier, added, shift = self.multiplier, self.added, self.shift
        raw = None
        if self.block is not None:
            raw = self.raw
            view = self.raw_window if count == window else self.raw_hop
            count = len(view) // 2
            if self.block.readinto(view) != 2 * count:
                raise SourceError("sensor %r: a short read" % self.name)
        head = self.head
        for i in range(count):
            if raw is None:
                reading = read()
            else:   # signed 16-bit little endian, as offset binary: the range an ADC gives
                reading = (raw[2 * i] | (raw[2 * i + 1] << 8)) ^ 0x8000
            q = (reading * multiplier + added) >> shift
            if q > 127:
                q = 127
            elif q < -128:
                q = -128
            ring[head] = q & 0xFF
            head += 1
            if head == window:
                head = 0
        self.head = head
        self.filled = min(window, self.filled + count)
        self.since += count
        return self.filled == window and self.since >= self.hop

    def copy_window(self, buf):
        """The window, oldest reading first, into buf; the position it was."""
        ring, window, head = self.ring, self.window, self.head
        for i in range(window):
            j = head + i
            if j >= window:
                j -= window
            buf[i] = ring[j]
        self.since = 0
        pos = self.pos
        self.pos = pos + 1
        return pos

    def due(self):
        """Readings due by now at the sampling rate, up to what the next window needs."""
        late = ticks_diff(ticks_us(), self.next_us)
        if late < 0:
            return 0, -late
        needed = self.window - self.filled if self.filled < self.window else self.hop - self.since
        if self.block is not None:   # the device buffers: read a whole block once it is due
            wait = (needed - 1) * self.period_us - late
            return (needed, 0) if wait <= 0 else (0, wait)
        count = min(late // self.period_us + 1, needed, MOST_AT_ONCE)
        return count, 0

    async def next_into(self, buf, wait_ms=0):
        waited_us = 0
        while True:
            count, early_us = self.due()
            if count:
                # Readings due back to back are taken back to back: the rate holds on average,
                # and a board busy inferring catches up rather than drifting.
                self.next_us += count * self.period_us
                if ticks_diff(ticks_us(), self.next_us) > self.window * self.period_us:
                    self.next_us = ticks_us()   # far behind (a long pause): start afresh
                if self.sample(count):
                    return self.copy_window(buf), None
                continue
            if waited_us >= wait_ms * 1000:
                return None
            await asyncio.sleep(min(early_us, wait_ms * 1000 - waited_us + 1) / 1000000)
            waited_us += early_us

    def waiting(self):
        return 0

    def close(self):
        pass
