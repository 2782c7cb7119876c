"""HAL backends and the power model, against fake /proc and /sys trees."""
import json
import time

import pytest

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


def test_every_hal_backend_implements_the_declared_interface():
    """boards/hal.py declares the HAL once; each backend implements all of it (the CPython ones
    by subclassing it; the MicroPython one, to spare an MCU's heap, by defining every method), so
    the node can call every method (the simulation hooks included) without probing for it."""
    from edgefleet.boards.hal import Hal
    from edgefleet.boards.hal_linux import LinuxHal
    from edgefleet.boards.hal_micropython import MicroPythonHal
    from edgefleet.boards.hal_mock import MockHal
    from edgefleet.boards.hal_sim import SimHal
    for cls in (LinuxHal, MockHal, SimHal):
        assert issubclass(cls, Hal), cls
    declared = [m for m in vars(Hal) if not m.startswith("_") and callable(getattr(Hal, m))]
    assert {"power", "cpu_percent", "extra_load", "heartbeat_delay_ms", "mpy_version"} <= set(declared), declared
    mcu = MicroPythonHal(catalog.load("esp32"))
    assert all(callable(getattr(mcu, m)) for m in declared), [m for m in declared if not hasattr(mcu, m)]
    assert mcu.extra_load() is None and mcu.heartbeat_delay_ms(1000) is None and mcu.cpu_percent() is None
    assert mcu.power(50) == {"src": "battery", "pct": None, "mw": None}
    hal = MockHal(catalog.load("rpi-pico-w"))
    # A real board's simulation hooks say nothing: no extra load, the configured heartbeat interval.
    assert hal.extra_load() is None and hal.heartbeat_delay_ms(1000) is None and hal.mpy_version() is None
    for cls in (LinuxHal, MicroPythonHal, MockHal, SimHal):
        assert all(callable(getattr(cls, m)) for m in ("mem", "reboot", "power", "cpu_percent", "temperature",
                                                        "watchdog_start", "watchdog_feed", "reset_cause")), cls


def _board_files(tree):
    import os
    return {name for _, _, names in os.walk(tree) for name in names}


def test_real_board_images_carry_no_simulation_modules(tmp_path):
    """hal_sim and its power model go only on simulated boards; hal_mock (unit tests) on none."""
    from edgefleet.controller.deploy import bundle
    from edgefleet.controller.install import image
    sim_only = {"hal_sim.py", "power.py", "sim_notify.py", "sim_camera.py", "hal_sim.mpy", "power.mpy", "sim_notify.mpy",
                "sim_camera.mpy"}  # and hal.py on an MCU
    never = {"hal_mock.py", "hal_mock.mpy", "sim_layer_probe.py", "sim_layer_probe.mpy"}
    for name in ("rpi-pico-w", "rpi4"):
        profile = catalog.load(name)
        real = image.node_config("real", profile, "127.0.0.1", 1883, simulated=False)
        sim = image.node_config("sim", profile, "127.0.0.1", 1883, simulated=True)
        real_tree = image.write_slotted_image(str(tmp_path / ("real-" + name)), real, [], mpy_arch=None)
        sim_tree = image.write_slotted_image(str(tmp_path / ("sim-" + name)), sim, [], mpy_arch=None)
        real_files, sim_files = _board_files(real_tree), _board_files(sim_tree)
        assert ("hal.py" in real_files) == (profile["runtime"] == "cpython"), sorted(real_files)
        assert not real_files & (sim_only | never), sorted(real_files)
        assert {"hal_sim.py", "power.py"} <= sim_files and not sim_files & never, sorted(sim_files)
        assert not {rel.rsplit("/", 1)[-1] for _, rel in image.slot_code_files(profile)} & (sim_only | never)
    flat = _board_files(image.write_image(str(tmp_path / "flat"), image.node_config(
        "flat", catalog.load("esp32"), "127.0.0.1", 1883, simulated=False), [], mpy_arch=None))
    assert "hal_micropython.py" in flat and not flat & (sim_only | never), sorted(flat)
    paths = [f[0] for f in bundle.inspect(bundle.build("rpi-pico-w", "1.0", bytes(32), models=[], seq=1))["manifest"]["files"]]
    assert "boards/hal_micropython.mpy" in paths and not {p.rsplit("/", 1)[-1] for p in paths} & (sim_only | never), paths
    sim_paths = [f[0] for f in bundle.inspect(bundle.build("rpi-pico-w", "1.0", bytes(32), models=[], mpy_arch="x64", seq=1))
                 ["manifest"]["files"]]
    assert "boards/hal_sim.mpy" in sim_paths and "boards/hal_mock.mpy" not in sim_paths, sim_paths


def test_mcu_profiles_record_what_tls_costs_and_whether_it_fits_beside_a_model():
    """The "tls" object tools/bench/tls.py writes: a MicroPython board holds TLS when the link's
    steady cost and the smallest model fit in the heap its runtime leaves models."""
    from edgefleet import models
    smallest = min(m["mcu_heap_bytes"] for m in models.manifests().values())
    for profile in catalog.all_profiles():
        if profile["runtime"] != "micropython":
            continue
        tls = profile["tls"]
        assert 0 < tls["heap_steady_bytes"] <= tls["heap_peak_bytes"], (profile["name"], tls)
        room = profile["heap_bytes"] - profile["runtime_heap_budget_bytes"]
        assert tls["fits"] == (tls["heap_steady_bytes"] + smallest <= room), (profile["name"], tls, room, smallest)
        assert str(room) in tls["why"] and tls["measured"].startswith("tools/bench/tls.py")


def test_a_malformed_tls_record_in_a_profile_is_refused(tmp_path, monkeypatch):
    from edgefleet.boards.errors import ProfileError
    good = catalog.load("rpi-pico-w")
    monkeypatch.setattr(catalog, "PROFILE_DIR", str(tmp_path))
    for bad, message in ((dict(good["tls"], heap_steady_bytes="29104"), "tls.heap_steady_bytes must be a byte count"),
                         (dict(good["tls"], fits="yes"), "tls.fits must be true or false"),
                         (dict(good["tls"], heap_peak_bytes=True), "tls.heap_peak_bytes must be a byte count"),
                         (dict(good["tls"], heap_peak_bytes=1), "below tls.heap_steady_bytes"),
                         ([1, 2], "tls must be an object")):
        (tmp_path / "board.json").write_text(json.dumps(dict(good, tls=bad)))
        with pytest.raises(ProfileError, match=message):
            catalog.load("board")
    (tmp_path / "board.json").write_text(json.dumps(good))
    assert catalog.load("board")["tls"] == good["tls"]


def test_a_simulated_microphone_delivers_the_simulated_signal_in_blocks(tmp_path):
    """A sensor wired to I2S on a simulated board reads as the real one does (readinto, at the
    wiring's rate); the simulated signal's burst is there, sample by sample."""
    sim_file = tmp_path / "sim.json"
    sim_file.write_text(json.dumps({"sensors": {"mic0": {"mid": 32768, "amp": 0, "noise": 0, "burst": 1000}}}))
    profile = dict(catalog.load("esp32"), sensors={"mic0": {"i2s": {"sck": 26, "ws": 25, "sd": 33}, "rate": 8000},
                                                   "adc0": {"adc_pin": 36}})
    hal = open_hal("sim", profile, {"base": "mock", "sim_file": str(sim_file)})
    mic = hal.sensor("mic0")
    assert mic.rate_hz == 8000
    buf = bytearray(16)
    assert mic.readinto(buf) == 16
    samples = [int.from_bytes(buf[i:i + 2], "little", signed=True) for i in range(0, 16, 2)]
    assert sorted(set(samples)) == [-1000, 1000] and samples[:4] == samples[4:]   # a square wave, 4 samples a period
    assert callable(hal.sensor("adc0")) and not hasattr(hal.sensor("adc0"), "readinto")
    with pytest.raises(OSError, match="declares no sensor 'adc9'"):
        hal.sensor("adc9")


def test_bus_sensor_code_goes_only_on_boards_that_wire_such_sensors():
    from edgefleet.controller.install import image
    plain = catalog.load("esp32")
    assert not image.bus_modules("micropython", plain)
    wired = dict(plain, sensors={"imu": {"i2c": {"sda": 21, "scl": 22}, "driver": "mpu6050"}})
    assert image.bus_modules("micropython", wired) == ("sensor_bus.py", "i2c_mpu6050.py")
    assert image.bus_modules("micropython", dict(plain, sensors={"mic": {"i2s": {}}})) == ("sensor_bus.py",)
    assert not image.bus_modules("cpython", wired)
