# HAL for a real MicroPython board: heap from gc, temperature from the chip's sensor,
# battery from the board's ADC where the profile says how it is wired.
import gc

try:
    import machine
except ImportError:  # the unix port used by simulated boards has a reduced machine module
    machine = None


def _nothing(self, *args):
    return None


class MicroPythonHal:
    """Implements boards/hal.py's interface without subclassing Hal: on a 110 KB board the base
    class and its module cost heap for good (tests/test_boards.py holds it to the interface)."""
    name = "micropython"
    # An MCU has no OS to ask for its CPU load (the node measures its event loop's busy time),
    # and a real board has no simulation hooks.
    cpu_percent = extra_load = heartbeat_delay_ms = _nothing

    def __init__(self, profile):
        self.profile = profile
        # Collections cost time in proportion to the heap: every 4 KB (main.py's pace while the
        # firmware loads) tripled inference time on a Pico W, where a roomier heap can wait longer.
        threshold = profile.get("gc_threshold_bytes")
        if threshold and hasattr(gc, "threshold"):
            gc.threshold(threshold)
        self._temp_source = profile.get("temperature")
        self._temp_adc = None
        if self._temp_source == "adc4" and machine is not None and hasattr(machine, "ADC"):
            self._temp_adc = machine.ADC(4)
        # boards/wifi.py's state between joins: [WLAN, wait ms, last failure]; False: no radio.
        self._wifi = None

    async def net_up(self, wifi, hostname):
        """Join the Wi-Fi network config.json names ("wifi"), and again after it dropped: the
        IP address when it just joined, None when up already or there is nothing to join; OSError
        naming the radio's status when a join fails. boards/wifi.py joins, and leaves the heap
        after each join."""
        state = self._wifi
        if not wifi or state is False or (state and state[0].isconnected()):
            return None
        from .wifi import up
        return await up(self, wifi, hostname)

    def power(self, cpu_pct):
        return {"src": self.profile.get("power", {}).get("source", "mains"), "pct": None, "mw": None}

    def mem(self):
        gc.collect()
        free = gc.mem_free()
        return free, free + gc.mem_alloc()

    def heap_free_now(self):
        return gc.mem_free()

    def sensor(self, name):
        wiring = self.profile.get("sensors", {}).get(name)
        if wiring is None:
            raise OSError("the board profile declares no sensor %r" % name)
        if machine is None:
            raise OSError("this port has no machine module")
        if "i2c" in wiring:
            from .sensor_bus import i2c_reader
            return i2c_reader(machine, wiring)
        if "i2s" in wiring:
            from .sensor_bus import I2sMicrophone
            return I2sMicrophone(machine, wiring)
        if "adc_pin" not in wiring:
            raise OSError("sensor %r: its wiring names no adc_pin, i2c or i2s" % name)
        if not hasattr(machine, "ADC"):
            raise OSError("this port has no machine.ADC")
        return machine.ADC(machine.Pin(wiring["adc_pin"])).read_u16

    def camera(self):
        raise OSError("a microcontroller takes no camera input (Linux boards only)")

    def pin_out(self, pin, on):
        if machine is None or not hasattr(machine, "Pin"):
            raise OSError("this port has no machine.Pin")
        machine.Pin(pin, machine.Pin.OUT).value(1 if on else 0)

    def temperature(self):
        if self._temp_adc is not None:
            # RP2040 datasheet: 27 C at 0.706 V, -1.721 mV per degree.
            volts = self._temp_adc.read_u16() * 3.3 / 65535
            return round(27 - (volts - 0.706) / 0.001721, 1)
        if self._temp_source == "esp32":
            try:
                import esp32
                return float(esp32.mcu_temperature())
            except (ImportError, AttributeError):
                return None
        return None

    def watchdog_start(self, timeout_ms):
        """Arm machine.WDT (it cannot be stopped again); returns the timeout used, or None."""
        if machine is None or not hasattr(machine, "WDT"):
            return None
        limit = self.profile.get("watchdog", {}).get("max_timeout_ms")
        if limit:
            timeout_ms = min(timeout_ms, limit)
        self._wdt = machine.WDT(timeout=timeout_ms)
        import __main__
        __main__.ef_wdt = self._wdt.feed   # for `edgefleet flash` at the REPL (mcu_main.py)
        return timeout_ms

    def watchdog_feed(self):
        wdt = getattr(self, "_wdt", None)
        if wdt is not None:
            wdt.feed()

    def reset_cause(self):
        if machine is None or not hasattr(machine, "reset_cause"):
            return None
        cause = machine.reset_cause()
        for name, label in (("WDT_RESET", "watchdog"), ("PWRON_RESET", "power"), ("HARD_RESET", "hard_reset"),
                            ("SOFT_RESET", "soft"), ("DEEPSLEEP_RESET", "deepsleep")):
            if getattr(machine, name, None) == cause:
                return label
        return None

    def mpy_version(self):
        # The one place the firmware reads it; cpu_percent (None: an MCU has no OS to ask) and
        # power (the profile's source) are Hal's defaults.
        import sys
        mpy = getattr(sys.implementation, "_mpy", None)
        return None if mpy is None else mpy & 0xFF

    def reboot(self):
        if machine is not None and hasattr(machine, "reset"):
            machine.reset()
        # The unix port has no machine.reset(); leaving the interpreter is its reboot (the
        # simulated board's harness starts it again, as a reset circuit would). SystemExit
        # alone does not leave it when main.py runs under `-i` (it drops to the REPL), so the
        # process ends itself: $PPID of the shell os.system starts is this interpreter.
        import sys
        if sys.platform == "linux":
            import os
            os.system("kill -TERM $PPID")
        sys.exit(0)
