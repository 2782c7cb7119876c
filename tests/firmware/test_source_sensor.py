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


# -- sensors on a bus: an I2C accelerometer through its driver, an I2S microphone --------------

class _I2c:
    """An MPU-6050 on a fake bus: its registers, and what was written to them."""

    def __init__(self, addr=0x68):
        self.addr = addr
        self.regs = bytearray(128)
        self.writes = []

    def writeto_mem(self, addr, reg, data):
        if addr != self.addr:
            raise OSError(19)   # ENODEV: nothing answers at that address
        self.writes.append((reg, bytes(data)))

    def readfrom_mem_into(self, addr, reg, buf):
        for i in range(len(buf)):
            buf[i] = self.regs[reg + i]


class _Machine:
    """What sensor_bus asks of `machine`."""

    def __init__(self, bus):
        self.bus = bus

    def Pin(self, number):
        return number

    def I2C(self, index, sda=None, scl=None, freq=None):
        self.opened = (index, sda, scl, freq)
        return self.bus


def test_an_mpu6050_axis_reads_as_offset_binary_without_allocating():
    from boards.i2c_mpu6050 import reader
    bus = _I2c()
    bus.regs[0x3D], bus.regs[0x3E] = 0xC0, 0x00   # ACCEL_YOUT = -16384 (-1 g)
    read = reader(bus, {"addr": 0x68, "axis": "y"})
    assert bus.writes == [(0x6B, b"\x00")]        # woken from sleep
    assert read() == 0x4000
    bus.regs[0x3D], bus.regs[0x3E] = 0x40, 0x00   # +1 g
    assert read() == 0xC000
    if sys.implementation.name == "micropython":
        gc.collect()
        gc.disable()
        before = gc.mem_alloc()
        for _ in range(50):
            read()
        used = gc.mem_alloc() - before
        gc.enable()
        assert used == 0, used
    assert "axis" in str(raises(OSError, reader, bus, {"axis": "w"}))
    assert "does not answer" in str(raises(OSError, reader, bus, {"addr": 0x69}))


def test_an_i2c_sensor_is_opened_through_its_driver_by_name():
    from boards.sensor_bus import i2c_reader
    bus = _I2c()
    machine = _Machine(bus)
    read = i2c_reader(machine, {"i2c": {"bus": 1, "sda": 21, "scl": 22}, "driver": "mpu6050", "axis": "x"})
    assert machine.opened == (1, 21, 22, 400000) and read() == 0x8000
    assert "no driver boards.i2c_bmp999" in str(raises(OSError, i2c_reader, machine, {"i2c": {}, "driver": "bmp999"}))
    assert "names its driver" in str(raises(OSError, i2c_reader, machine, {"i2c": {}, "driver": "../x"}))


class _Microphone:
    """A block sensor: 16-bit samples counting up from `first`, at rate_hz."""

    def __init__(self, rate_hz, first=0):
        self.rate_hz = rate_hz
        self.next = first

    def readinto(self, buf):
        for i in range(len(buf) // 2):
            sample = self.next
            self.next += 1
            buf[2 * i] = sample & 0xFF
            buf[2 * i + 1] = (sample >> 8) & 0xFF
        return len(buf)


class _BlockHal:
    def __init__(self, mic):
        self.mic = mic

    def sensor(self, name):
        return self.mic


def test_a_microphone_is_read_a_window_then_a_hop_at_a_time_without_allocating():
    mic = _Microphone(8000, first=-4)
    source = SensorSource({"sensor": "mic0", "rate_hz": 8000, "hop": 2, "scale": 1.0, "offset": -32768},
                          _Model(4, (1.0, 0)), _BlockHal(mic))
    assert source.sample(4)                       # the first window comes whole
    buf = bytearray(4)
    assert source.copy_window(buf) == 0 and list(buf) == [0xFC, 0xFD, 0xFE, 0xFF]   # -4..-1
    assert source.sample(2)                       # then a hop
    assert source.copy_window(buf) == 1 and list(buf) == [0xFE, 0xFF, 0x00, 0x01]   # -2..1
    if sys.implementation.name == "micropython":
        gc.collect()
        gc.disable()
        before = gc.mem_alloc()
        for _ in range(20):
            source.sample(2)
            source.copy_window(buf)
        used = gc.mem_alloc() - before
        gc.enable()
        assert used == 0, used
    e = raises(SourceError, SensorSource, {"sensor": "mic0", "rate_hz": 16000}, _Model(4, (1.0, 0)), _BlockHal(mic))
    assert "samples at 8000 Hz" in str(e)


def test_next_into_takes_a_microphones_blocks_as_they_are_due():
    source = SensorSource({"sensor": "mic0", "rate_hz": 20000, "hop": 8}, _Model(16, (256.0, -128)),
                          _BlockHal(_Microphone(20000)))
    buf = bytearray(16)

    async def take():
        got = []   # (MicroPython has no await inside a comprehension)
        for _ in range(3):
            got.append(await source.next_into(buf, 1000))
        return got

    assert [g[0] for g in asyncio.run(take())] == [0, 1, 2]
