# The `sensor` input source (firmware/source_sensor.py): readings scaled and quantised to the
# model's input, windows every `hop` readings, no allocation per reading; under CPython and
# MicroPython.
import gc
import sys

from firmware.source_sensor import SensorSource, fixed_point
from firmware.sources import SourceError
from unit import raises

try:
    import asyncio
except ImportError:
    asyncio = None


class _Model:
    def __init__(self, size, quant):
        self.input_size = size
        self.input_quant = quant


class _Hal:
    def __init__(self, readings):
        self.readings = readings

    def sensor(self, name):
        if name != "adc0":
            raise OSError("no sensor %r" % name)
        values, at = self.readings, [0]

        def read():
            i = at[0]
            at[0] = (i + 1) % len(values)
            return values[i]
        return read


def test_fixed_point_quantises_as_the_model_would():
    quant = (0.02, -3)
    scale, offset = 1.0 / 65535 * 4, -2.0           # 0..65535 -> -2..2 volts
    multiplier, added, shift = fixed_point(scale / quant[0], offset / quant[0] + quant[1])
    worst = 0
    for reading in range(0, 65536, 97):
        exact = (reading * scale + offset) / quant[0] + quant[1]
        got = (reading * multiplier + added) >> shift
        worst = max(worst, abs(got - exact))
    assert worst <= 0.5 + 1e-3, worst   # within rounding of the exact value


def test_windows_come_every_hop_readings_oldest_first():
    readings = list(range(0, 65536, 4096))            # 16 readings, ramping
    quant = (1.0, 0)
    source = SensorSource({"sensor": "adc0", "rate_hz": 1000, "hop": 2, "scale": 1 / 4096, "start": 7},
                          _Model(4, quant), _Hal(readings))
    assert not source.sample(3)                       # the window is not full yet
    assert source.sample(1)
    buf = bytearray(4)
    assert source.copy_window(buf) == 7 and list(buf) == [0, 1, 2, 3]
    assert not source.sample(1) and source.sample(1)  # two readings on: the next window
    assert source.copy_window(buf) == 8 and list(buf) == [2, 3, 4, 5]


def test_readings_past_int8_are_clamped():
    source = SensorSource({"sensor": "adc0", "rate_hz": 10, "scale": 1.0, "offset": -32768},
                          _Model(2, (1.0, 0)), _Hal([0, 65535]))
    source.sample(2)
    buf = bytearray(2)
    source.copy_window(buf)
    assert list(buf) == [0x80, 0x7F]   # -128 and 127 as int8 bytes


def test_a_window_costs_no_heap():
    if sys.implementation.name != "micropython":
        return   # CPython allocates for every int; the MCU is what this is about
    source = SensorSource({"sensor": "adc0", "rate_hz": 1000, "hop": 16, "scale": 0.001, "offset": -10},
                          _Model(64, (0.05, 3)), _Hal([100, 30000, 65535, 0, 12345, 40000, 7, 50000]))
    buf = bytearray(64)
    source.sample(64)
    source.copy_window(buf)
    gc.collect()
    gc.disable()
    try:
        before = gc.mem_alloc()
        for _ in range(20):
            source.sample(16)
            source.copy_window(buf)
        used = gc.mem_alloc() - before
    finally:
        gc.enable()
    assert used == 0, used


def test_next_into_paces_windows_at_the_rate():
    source = SensorSource({"sensor": "adc0", "rate_hz": 2000, "hop": 10}, _Model(20, (256.0, -128)),
                          _Hal([1000, 2000, 3000]))
    buf = bytearray(20)

    async def take():
        got = []
        for _ in range(3):
            got.append(await source.next_into(buf, 1000))
        return got

    got = asyncio.run(take())
    assert [g[0] for g in got] == [0, 1, 2] and all(g[1] is None for g in got)


def test_a_bad_sensor_spec_is_refused_naming_what():
    model = _Model(8, (1.0, 0))
    for spec, words in (({"rate_hz": 10}, "'sensor'"), ({"sensor": "adc0"}, "'rate_hz'"),
                        ({"sensor": "adc0", "rate_hz": 0}, "rate_hz"), ({"sensor": "adc0", "rate_hz": 10, "hop": 9}, "hop"),
                        ({"sensor": "adc9", "rate_hz": 10}, "no sensor 'adc9'"),
                        ({"sensor": "adc0", "rate_hz": 10, "scale": 1e9}, "far outside int8")):
        e = raises(SourceError, SensorSource, spec, model, _Hal([0]))
        assert words in str(e), (spec, str(e))
