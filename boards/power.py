# A board's power supply as a model: a battery that drains with CPU load, or mains.
# Used by the simulated boards' HAL; common subset so it runs on MicroPython too.


class PowerModel:
    def __init__(self, profile_power, source=None, battery_pct=100.0):
        self.idle_mw = float(profile_power.get("idle_mw", 100))
        self.active_mw = float(profile_power.get("active_mw", self.idle_mw))
        self.capacity_mwh = float(profile_power.get("battery_mwh", 0))
        self.source = source or profile_power.get("source", "mains")
        self.battery_pct = float(battery_pct) if self.capacity_mwh > 0 else None
        self.draw_mw = self.idle_mw
        # Simulated seconds per real second, so tests can drain a battery in seconds.
        self.time_scale = 1.0

    def step(self, dt_s, cpu_pct):
        """Advance the model by dt_s real seconds at the given CPU load; returns the draw in mW."""
        load = min(max(cpu_pct, 0.0), 100.0) / 100.0
        self.draw_mw = self.idle_mw + (self.active_mw - self.idle_mw) * load
        if self.source == "battery" and self.battery_pct is not None:
            used_mwh = self.draw_mw * dt_s * self.time_scale / 3600.0
            self.battery_pct = max(0.0, self.battery_pct - 100.0 * used_mwh / self.capacity_mwh)
        return self.draw_mw

    def reading(self):
        pct = None if self.battery_pct is None else round(self.battery_pct, 2)
        return {"src": self.source, "pct": pct, "mw": round(self.draw_mw, 1)}
