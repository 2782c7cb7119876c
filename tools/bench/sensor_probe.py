# Runs ON the MicroPython board (the unix port in the benchmark): the `sensor` input source's
# preprocessing path (firmware/source_sensor.py) - readings scaled and quantised into the ring,
# a window copied out every hop - timed per window, and its heap allocation in steady state.
# Readings come from a fixed table (a real ADC read returns a small int: nothing allocated).
# Usage: micropython sensor_probe.py WINDOW HOP WINDOWS  -> one JSON line
import gc
import json
import sys
import time

from firmware.source_sensor import SensorSource


class Model:
    def __init__(self, size):
        self.input_size = size
        self.input_quant = (0.0040589, 0)


class Hal:
    def sensor(self, name):
        values = [32768, 40000, 25000, 65535, 0, 31000, 33000, 12345]
        at = [0]

        def read():
            i = at[0] + 1
            if i == 8:
                i = 0
            at[0] = i
            return values[i]
        return read


def main(window, hop, windows):
    source = SensorSource({"sensor": "adc0", "rate_hz": 200, "hop": hop, "scale": 1 / 32767.5, "offset": -1.0},
                          Model(window), Hal())
    buf = bytearray(window)
    source.sample(window)
    source.copy_window(buf)
    gc.collect()
    gc.disable()
    before = gc.mem_alloc()
    t0 = time.ticks_us()
    for _ in range(windows):
        source.sample(hop)
        source.copy_window(buf)
    elapsed = time.ticks_diff(time.ticks_us(), t0)
    alloc = gc.mem_alloc() - before
    gc.enable()
    print(json.dumps({"window": window, "hop": hop, "windows": windows, "us": elapsed / windows,
                      "alloc_bytes": alloc // windows, "alloc_total": alloc}))


main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
