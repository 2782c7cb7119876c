"""A sensor workload end to end, as a user builds it: a model of their own added with
`edgefleet model add` (tests/data/signal_anomaly, made by tools/models/make_sensor_model.py with
the standard converter), a workload reading windows of the board's ADC channel (a simulated
signal through the HAL on a real MicroPython board) placed only where that sensor is, and an
output watch that raises an event and drives a pin when the signal carries a burst - and clears
when it goes. Real mosquitto, the real controller."""
import json
import os

import pytest

from edgefleet import models
from edgefleet.controller import cli
from edgefleet.controller.fleet.service import ControllerService
from edgefleet.controller.sim.simfleet import SimFleet
from support import registry
from support.waiting import wait_until

pytestmark = pytest.mark.e2e

DATA = os.path.join(os.path.dirname(__file__), "data", "signal_anomaly")
VIBRATION = {"id": "vibration", "model": "signal_anomaly", "rate": 6.25, "replicas": 1,
             "input": {"kind": "sensor", "sensor": "adc0", "rate_hz": 200, "hop": 32,
                       "scale": 1 / 32767.5, "offset": -1.0},
             "output": {"watch": {"index": 0, "above": 0.5}, "pin": 5}}
# No board declares an adc7: placement says so.
ELSEWHERE = dict(VIBRATION, id="elsewhere", input=dict(VIBRATION["input"], sensor="adc7"))


def test_an_adc_window_anomaly_workload_raises_an_event_on_the_board_that_has_the_sensor(mosquitto, tmp_path,
                                                                                          monkeypatch):
    monkeypatch.setenv("EDGEFLEET_HOME", str(tmp_path / "home"))
    assert cli.main(["model", "add", os.path.join(DATA, "model.tflite"), "--name", "signal_anomaly",
                     "--samples", DATA]) == 0
    db_path = str(tmp_path / "fleet.db")
    controller = ControllerService(mosquitto.host, mosquitto.port, db_path=db_path, manifests=models.manifests(),
                                   workloads=[VIBRATION, ELSEWHERE]).start()
    fleet = SimFleet(str(tmp_path / "fleet"), mosquitto.host, mosquitto.port,
                     [("mcu-1", "rpi-pico-w"), ("pi-1", "rpi4")])

    def scores():
        return [s for s, in registry.rows(db_path, "SELECT score FROM results WHERE workload='vibration' ORDER BY seq")]

    def events(kind):
        return [json.loads(d) for d, in registry.rows(db_path, "SELECT data FROM events WHERE kind=? ORDER BY id", (kind,))]

    try:
        fleet.start()
        wait_until(lambda: len(scores()) >= 12, 60, "a dozen windows of the quiet signal")
        snap = controller.snapshot()
        placed = {w["id"]: w for w in snap["workloads"]}
        assert placed["vibration"]["nodes"] == ["mcu-1"]          # the Pi declares no adc0
        assert "has no sensor adc7" in placed["elsewhere"]["pending"], placed["elsewhere"]
        assert max(scores()) < 0.5 and not events("threshold")

        quiet = len(scores())
        fleet.set_sim("mcu-1", sensors={"adc0": {"burst": 6000}})
        crossing = wait_until(lambda: events("threshold"), 30, "the burst seen")[0]
        assert crossing["wl"] == "vibration" and crossing["value"] > 0.5 and crossing["in"] >= quiet - 1
        fleet.set_sim("mcu-1", sensors={"adc0": {"burst": 0}})
        wait_until(lambda: events("threshold_clear"), 30, "the burst gone")

        levels = [line.split()[:2] for line in open(os.path.join(fleet.flash_dir("mcu-1"), "gpio.log")) if line.strip()]
        assert levels[:2] == [["5", "1"], ["5", "0"]], levels
        # Windows are counted without a gap: every position from 0 on, each once.
        positions = [p for p, in registry.rows(db_path, "SELECT pos FROM accepted WHERE workload='vibration' ORDER BY pos")]
        assert positions == list(range(len(positions))) and len(positions) >= quiet
    finally:
        fleet.stop()
        controller.stop()
