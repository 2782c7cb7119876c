# HAL of a simulated board: the real runtime's HAL for memory, plus a power model and the
# operator's injected CPU load, read from a small JSON file the harness or CLI writes on "flash".
import json
import os

from .power import PowerModel


class SimHal:
    name = "sim"

    def __init__(self, base, profile, sim_file="sim.json"):
        self.base = base
        self.profile = profile
        self.sim_file = sim_file
        self.power_model = PowerModel(profile.get("power", {}))
        self.injected_load = 0.0
        self._sim_mtime = None
        self._last_power_ms = None
        self._read_sim_file()

    def _read_sim_file(self):
        try:
            mtime = os.stat(self.sim_file)[8]
        except OSError:
            return
        if mtime == self._sim_mtime:
            return
        self._sim_mtime = mtime
        try:
            with open(self.sim_file) as f:
                settings = json.load(f)
        except (OSError, ValueError):
            return
        model = self.power_model
        self.injected_load = float(settings.get("load", self.injected_load))
        model.source = settings.get("source", model.source)
        model.time_scale = float(settings.get("time_scale", model.time_scale))
        if "battery_pct" in settings and model.battery_pct is not None:
            model.battery_pct = float(settings["battery_pct"])

    def cpu_percent(self):
        return self.base.cpu_percent()

    def mem(self):
        return self.base.mem()

    def power(self, cpu_pct):
        self._read_sim_file()
        import time
        now = time.time()
        dt = 0.0 if self._last_power_ms is None else now - self._last_power_ms
        self._last_power_ms = now
        self.power_model.step(dt, cpu_pct)
        return self.power_model.reading()

    def extra_load(self):
        """Load the operator injected (another program on the board), in percent."""
        self._read_sim_file()
        return self.injected_load

    def temperature(self):
        return self.base.temperature()

    def reboot(self):
        self.base.reboot()
