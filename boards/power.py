# A board's power supply as a model: a battery that drains with CPU load, mains, or a solar
# panel charging the battery (its harvest, solar_mw, less the board's draw).
# Used by the simulated boards' HAL; common subset so it runs on MicroPython too.


class PowerModel:
    def __init__(self, profile_power, source=None, battery_pct=100.0):
        self.idle_mw = float(profile_power.get("idle_mw", 100))
        self.active_mw = float(profile_power.get("active_mw", self.idle_mw))
        self.capacity_mwh = float(profile_power.get("battery_mwh", 0))
        self.source = source or profile_power.get("source", "mains")
        self.battery_pct = float(battery_pct) if self.capacity_mwh > 0 else None
        self.draw_mw = self.idle_mw
        self.solar_mw = float(profile_power.get("solar_mw", 0))
        # The SoC throttles its clock (thermal limit); set by the simulation.
        self.throttled = False
        # Simulated seconds per real second, so tests can drain a battery in seconds.
        self.time_scale = 1.0

    def step(self, dt_s, cpu_pct):
        """Advance the model by dt_s real seconds at the given CPU load; returns the draw in mW."""
        load = min(max(cpu_pct, 0.0), 100.0) / 100.0
        self.draw_mw = self.idle_mw + (self.active_mw - self.idle_mw) * load
        if self.source in ("battery", "solar") and self.battery_pct is not None:
            net_mw = self.draw_mw - (self.solar_mw if self.source == "solar" else 0.0)
            used_mwh = net_mw * dt_s * self.time_scale / 3600.0
            self.battery_pct = min(100.0, max(0.0, self.battery_pct - 100.0 * used_mwh / self.capacity_mwh))
        return self.draw_mw

    def reading(self):
        pct = None if self.battery_pct is None else round(self.battery_pct, 2)
        reading = {"src": self.source, "pct": pct, "mw": round(self.draw_mw, 1)}
        if self.throttled:
            reading["throttled"] = True
        if self.source == "solar":
            reading["harvest_mw"] = round(self.solar_mw, 1)
        return reading
