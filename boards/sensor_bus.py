# Sensors on a bus, for a MicroPython board's HAL (hal_micropython.sensor): an I2C device read by
# a small driver module (boards/i2c_DRIVER.py), and an I2S microphone. Imported only by a board
# whose workload reads such a sensor.
import sys

DRIVER_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789_"


def i2c_reader(machine, wiring):
    """The function that takes one reading (0..65535) of an I2C sensor, through its driver."""
    bus = wiring["i2c"]
    driver = wiring.get("driver") or ""
    if not driver or [c for c in driver if c not in DRIVER_CHARS]:
        raise OSError("an I2C sensor names its driver (boards/i2c_DRIVER.py), not %r" % driver)
    name = "boards.i2c_" + driver
    try:
        __import__(name)
    except ImportError:
        raise OSError("no driver %s on this board" % name)
    i2c = machine.I2C(bus.get("bus", 0), sda=machine.Pin(bus["sda"]), scl=machine.Pin(bus["scl"]),
                      freq=bus.get("freq", 400000))
    return sys.modules[name].reader(i2c, wiring)


class I2sMicrophone:
    """An I2S microphone as a block sensor: readinto(buf) fills buf with 16-bit samples (little
    endian, signed) at rate_hz, as the source asks for them (firmware/source_sensor.py)."""

    def __init__(self, machine, wiring):
        if not hasattr(machine, "I2S"):
            raise OSError("this port has no machine.I2S")
        bus = wiring["i2s"]
        self.rate_hz = wiring.get("rate", 16000)
        self.i2s = machine.I2S(bus.get("id", 0), sck=machine.Pin(bus["sck"]), ws=machine.Pin(bus["ws"]),
                               sd=machine.Pin(bus["sd"]), mode=machine.I2S.RX, bits=16, format=machine.I2S.MONO,
                               rate=self.rate_hz, ibuf=bus.get("ibuf", 8192))
        self.readinto = self.i2s.readinto
