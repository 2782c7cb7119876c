# A HAL with settable readings, for unit tests of the firmware. Never on a board's flash.
from .hal import Hal


class MockHal(Hal):
    name = "mock"

    def __init__(self, profile):
        self.profile = profile
        self.cpu = None
        self.mem_free = 50000
        self.mem_total = profile.get("heap_bytes", 100000)
        self.power_reading = {"src": "mains", "pct": None, "mw": None}
        self.temp = None
        self.reboots = 0
        self.watchdog_timeout_ms = None
        self.feeds = 0
        self.ready = False
        self.cause = None
        self.pins = []   # (pin, on) in the order driven
        self.readings = {}   # sensor name -> readings sensor() returns in turn
        self.frames = None   # (frame, truth) pairs camera() serves in turn; None: no camera

    def pin_out(self, pin, on):
        self.pins.append((pin, bool(on)))

    def sensor(self, name):
        """Readings from self.readings[name] (a list), round and round."""
        values = self.readings[name]
        at = [0]

        def read():
            i = at[0]
            at[0] = i + 1 if i + 1 < len(values) else 0
            return values[i]
        return read

    def camera(self):
        """Frames from self.frames, round and round."""
        if self.frames is None:
            raise OSError("the mock board has no camera")
        frames = self.frames

        class Camera:
            at = 0
            closed = False

            def read(self):
                frame = frames[self.at % len(frames)]
                self.at += 1
                return frame

            def close(self):
                self.closed = True
        return Camera()

    def cpu_percent(self):
        return self.cpu

    def mem(self):
        return self.mem_free, self.mem_total

    def power(self, cpu_pct):
        return dict(self.power_reading)

    def temperature(self):
        return self.temp

    def reboot(self):
        self.reboots += 1

    def watchdog_start(self, timeout_ms):
        self.ready = True
        self.watchdog_timeout_ms = timeout_ms
        return timeout_ms

    def watchdog_feed(self):
        self.feeds += 1

    def reset_cause(self):
        return self.cause
