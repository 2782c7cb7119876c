# HAL of a simulated board: the real runtime's HAL for memory, plus a power model and the
# operator's injected CPU load, read from a small JSON file the harness or CLI writes on "flash".
import json
import time

from .hal import Hal
from .sim_notify import feed_watchdog, notify_harness
from .power import PowerModel


def _now_s():
    # Sub-second time on both runtimes (time.time() is whole seconds on several MCU ports).
    if hasattr(time, "ticks_ms"):
        return time.ticks_ms() / 1000.0
    return time.monotonic()


class SimHal(Hal):
    name = "sim"

    def __init__(self, base, profile, sim_file="sim.json", layer_bytes=0, rom_bytes=0):
        self.base = base
        # Heap the harness added for this layer (boards/sim_layer_probe.py): not the board's.
        self.layer_bytes = layer_bytes
        # Heap the harness added for the ROM image a real board maps from flash (romboot.py).
        self.rom_bytes = rom_bytes
        self.profile = profile
        self.sim_file = sim_file
        self.power_model = PowerModel(profile.get("power", {}))
        self.injected_load = 0.0
        self._sim_read_at = None
        self._battery_set = None
        self._cpu_mark = None
        self._last_power_s = None
        self.temp_c = None
        self.sensor_shapes = {}
        self.camera_dir = None
        self.hb_jitter = 0.0
        self._read_sim_file()

    def _read_sim_file(self):
        # Re-read at most every 200 ms: a file's mtime has whole-second resolution on
        # MicroPython, too coarse to notice two quick changes.
        now = _now_s()
        if self._sim_read_at is not None and now - self._sim_read_at < 0.2:
            return
        self._sim_read_at = now
        try:
            with open(self.sim_file) as f:
                settings = json.load(f)
        except (OSError, ValueError):
            return
        model = self.power_model
        self.injected_load = float(settings.get("load", self.injected_load))
        model.source = settings.get("source", model.source)
        model.time_scale = float(settings.get("time_scale", model.time_scale))
        model.solar_mw = float(settings.get("solar_mw", model.solar_mw))
        model.throttled = bool(settings.get("throttled", False))
        self.temp_c = settings.get("temp", None)
        self.sensor_shapes = settings.get("sensors", {})
        self.camera_dir = settings.get("camera")
        self.hb_jitter = float(settings.get("hb_jitter", 0.0))
        # A battery level set by the operator applies once; from there the model drains it.
        pct = settings.get("battery_pct")
        if pct is not None and pct != self._battery_set and model.battery_pct is not None:
            model.battery_pct = float(pct)
        self._battery_set = pct

    def cpu_percent(self):
        # A simulated Linux board shares this machine with the rest of the fleet: its CPU is
        # what its own process uses, spread over the board's cores, not the host's load.
        if hasattr(self.base, "process_cpu_seconds"):
            now, used = _now_s(), self.base.process_cpu_seconds()
            last, self._cpu_mark = self._cpu_mark, (now, used)
            if last is None or now <= last[0]:
                return 0.0
            cores = self.profile.get("cpu", {}).get("cores", 1)
            return round(min(100.0, 100.0 * (used - last[1]) / (now - last[0]) / cores), 1)
        return self.base.cpu_percent()

    def mem(self):
        # Likewise its memory is the board's RAM less what this process holds.
        if hasattr(self.base, "process_rss"):
            total = self.profile.get("ram_bytes", 0)
            return max(0, total - self.base.process_rss()), total
        # The board's free heap is what is free here; its total lacks what this layer and the
        # ROM image were given.
        free, total = self.base.mem()
        return free, total - self.layer_bytes - self.rom_bytes

    def power(self, cpu_pct):
        self._read_sim_file()
        now = _now_s()
        dt = 0.0 if self._last_power_s is None else now - self._last_power_s
        if dt < 0:  # the tick counter wrapped
            dt = 0.0
        self._last_power_s = now
        self.power_model.step(dt, cpu_pct)
        return self.power_model.reading()

    def extra_load(self):
        """Load the operator injected (another program on the board), in percent."""
        self._read_sim_file()
        return self.injected_load

    def temperature(self):
        self._read_sim_file()
        if self.temp_c is not None:
            return float(self.temp_c)
        return self.base.temperature()

    # -- the watchdog: the harness enforces it (controller/sim/simwatchdog.py) ---------------------

    def watchdog_start(self, timeout_ms):
        if self.base.name == "linux":
            return self.base.watchdog_start(timeout_ms)
        # The unix port has no machine.WDT: the harness plays it, with the board's limit.
        limit = self.profile.get("watchdog", {}).get("max_timeout_ms")
        if limit:
            timeout_ms = min(timeout_ms, limit)
        if not notify_harness("READY=1\nWDT_START=%d" % timeout_ms):
            return None
        import __main__
        # As hal_micropython leaves machine.WDT's feed: a function of a module of its own, so that
        # what `edgefleet flash` keeps alive at the REPL is that little, not this HAL.
        __main__.ef_wdt = feed_watchdog
        return timeout_ms

    def watchdog_feed(self):
        if self.base.name == "linux":
            self.base.watchdog_feed()
        else:
            feed_watchdog()

    def reset_cause(self):
        # The harness's reset-cause register: why it last reset this board.
        import os
        return os.getenv("EDGEFLEET_SIM_RESET_CAUSE") or None

    def heartbeat_delay_ms(self, interval_ms):
        """The wait before the next heartbeat: `interval_ms`, spread uniformly by +-hb_jitter
        (a fraction; sim.json, default 0) to test the failure detector against a noisy link."""
        self._read_sim_file()
        if self.hb_jitter <= 0:
            return interval_ms
        import random
        spread = random.getrandbits(16) / 32767.5 - 1.0   # -1 .. 1
        return max(1, int(interval_ms * (1.0 + self.hb_jitter * spread)))

    def mpy_version(self):
        return self.base.mpy_version()

    def heap_free_now(self):
        return self.base.heap_free_now()

    def sensor(self, name):
        """A simulated signal for each sensor the profile declares: sim.json's "sensors" shapes
        it ({NAME: {"mid", "amp", "hz", "noise", "burst"}}, read again as the file changes): a
        sine around `mid`, uniform noise, and while `burst` is above 0 a square wave of that
        amplitude at a quarter of the sampling rate - the anomaly a test injects. A sensor wired to
        I2S (a microphone) delivers that signal in blocks, as the real one does."""
        wiring = self.profile.get("sensors", {}).get(name)
        if wiring is None:
            raise OSError("the board profile declares no sensor %r" % name)
        import math
        state = [12345, 0]   # noise generator, readings taken

        def read():
            self._read_sim_file()
            shape = self.sensor_shapes.get(name) or {}
            t = _now_s()
            value = shape.get("mid", 32768) + shape.get("amp", 8000) * math.sin(2 * math.pi * shape.get("hz", 2) * t)
            state[0] = (state[0] * 1103515245 + 12345) & 0x7FFFFFFF
            value += shape.get("noise", 200) * ((state[0] >> 8) / 8388608.0 - 1.0)
            state[1] += 1
            burst = shape.get("burst", 0)
            if burst:
                value += burst if (state[1] >> 1) & 1 else -burst
            return max(0, min(65535, int(value)))
        if "i2s" in wiring:
            return SimMicrophone(read, wiring.get("rate", 16000))
        return read

    def camera(self):
        """Image files served as frames (boards/sim_camera.py): the folder sim.json's "camera"
        names, in name order, round and round, on a board whose profile declares a camera."""
        if "camera" not in self.profile:
            raise OSError("the board profile declares no camera")
        from .sim_camera import FileCamera
        return FileCamera(self)

    def pin_out(self, pin, on):
        # A simulated board has no pins: each level it drives is a line of gpio.log in its
        # folder, for the harness (and the person watching) to read.
        with open("gpio.log", "a") as f:
            f.write("%d %d %d\n" % (pin, 1 if on else 0, int(_now_s() * 1000)))

    def reboot(self):
        self.base.reboot()


class SimMicrophone:
    """A simulated I2S microphone: blocks of the simulated signal as 16-bit signed samples."""

    def __init__(self, read, rate_hz):
        self.read = read
        self.rate_hz = rate_hz

    def readinto(self, buf):
        for i in range(len(buf) // 2):
            sample = self.read() - 32768
            buf[2 * i] = sample & 0xFF
            buf[2 * i + 1] = (sample >> 8) & 0xFF
        return len(buf) // 2 * 2
