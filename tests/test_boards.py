"""HAL backends and the power model, against fake /proc and /sys trees."""
import json
import time

from edgefleet.boards import catalog, open_hal
from edgefleet.boards.power import PowerModel


def write(root, path, text):
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)


def test_linux_hal_reads_proc_and_sys(tmp_path):
    write(tmp_path, "/proc/stat", "cpu  100 0 100 800 0 0 0 0 0 0\n")
    write(tmp_path, "/proc/meminfo", "MemTotal:  4000 kB\nMemFree:  1000 kB\nMemAvailable:  3000 kB\n")
    write(tmp_path, "/sys/class/thermal/thermal_zone0/temp", "48250\n")
    write(tmp_path, "/sys/class/power_supply/BAT0/type", "Battery\n")
    write(tmp_path, "/sys/class/power_supply/BAT0/capacity", "64\n")
    write(tmp_path, "/sys/class/power_supply/BAT0/status", "Discharging\n")
    hal = open_hal("linux", catalog.load("rpi4"), {"sysroot": str(tmp_path)})
    write(tmp_path, "/proc/stat", "cpu  175 0 125 900 0 0 0 0 0 0\n")
    assert hal.cpu_percent() == 50.0  # 100 busy jiffies of 200
    assert hal.mem() == (3000 * 1024, 4000 * 1024)
    assert hal.temperature() == 48.2 or hal.temperature() == 48.3
    assert hal.power(0) == {"src": "battery", "pct": 64.0, "mw": None}
    write(tmp_path, "/sys/class/power_supply/BAT0/status", "Charging\n")
    assert hal.power(0)["src"] == "mains"


def test_linux_hal_without_sensors_falls_back_to_the_profile(tmp_path):
    hal = open_hal("linux", catalog.load("rpi4"), {"sysroot": str(tmp_path)})
    assert hal.temperature() is None
    assert hal.power(10) == {"src": "mains", "pct": None, "mw": None}
    assert hal.cpu_percent() == 0.0


def test_power_model_drains_faster_under_load():
    profile = catalog.load("rpi-pico-w")["power"]
    idle, busy = PowerModel(profile), PowerModel(profile)
    for _ in range(10):
        idle.step(360.0, 0)
        busy.step(360.0, 100)
    assert busy.battery_pct < idle.battery_pct < 100.0
    # One hour at the idle draw uses idle_mw mWh of the battery.
    assert abs((100.0 - idle.battery_pct) - 100.0 * profile["idle_mw"] / profile["battery_mwh"]) < 1e-6
    mains = PowerModel(catalog.load("rpi4")["power"])
    mains.step(3600, 100)
    assert mains.reading() == {"src": "mains", "pct": None, "mw": 6400.0}


def test_sim_hal_applies_injected_load_and_power_settings(tmp_path):
    sim_file = tmp_path / "sim.json"
    hal = open_hal("sim", catalog.load("rpi-zero-2w"), {"base": "mock", "sim_file": str(sim_file)})
    assert hal.extra_load() == 0.0
    sim_file.write_text(json.dumps({"load": 95, "source": "battery", "battery_pct": 18.5}))
    time.sleep(0.25)
    assert hal.extra_load() == 95.0
    reading = hal.power(10)
    assert reading["src"] == "battery" and abs(reading["pct"] - 18.5) < 0.01
