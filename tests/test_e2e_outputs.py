"""Results that fit the model, end to end: a workload's output spec (firmware/outputs.py) sent
in the assignment, read by a real MicroPython node (every output dequantised; a watched output
raising events and driving a pin, which a simulated board writes to gpio.log) and by a real
CPython node (the three best classes, through its isolated inference process); stored by the
controller with the results, through real mosquitto."""
import json
import os

import pytest

from edgefleet import models
from edgefleet.controller.fleet.service import ControllerService
from edgefleet.controller.sim.simfleet import SimFleet
from support import registry
from support.waiting import wait_until

pytestmark = pytest.mark.e2e

# digits_dense's output 0 is the probability of a "0": over 0.5 on the zeros among the samples.
WATCHED = {"id": "zeros", "model": "digits_dense", "rate": 10.0, "replicas": 1, "input": {"kind": "samples"},
           "constraints": {"runtime": "micropython"},
           "output": {"kind": "values", "watch": {"index": 0, "above": 0.5}, "pin": 2}}
RANKED = {"id": "ranked", "model": "digits_dense", "rate": 10.0, "replicas": 1, "input": {"kind": "samples"},
          "constraints": {"runtime": "cpython"}, "output": {"top_k": 3}}


def _stored(db_path, workload):
    return registry.rows(db_path, "SELECT node, label, score, outputs, seq FROM results WHERE workload=? ORDER BY node, seq",
                         (workload,))


def _events(db_path, kind):
    return registry.rows(db_path, "SELECT node, level, data FROM events WHERE kind=? ORDER BY id", (kind,))


def test_a_workloads_output_spec_shapes_its_results_events_and_pin(mosquitto, tmp_path):
    db_path = str(tmp_path / "fleet.db")
    controller = ControllerService(mosquitto.host, mosquitto.port, db_path=db_path, manifests=models.manifests(),
                                   workloads=[WATCHED, RANKED]).start()
    fleet = SimFleet(str(tmp_path / "fleet"), mosquitto.host, mosquitto.port,
                     [("mcu-1", "rpi-pico-w"), ("pi-1", "rpi4")])
    try:
        fleet.start()
        wait_until(lambda: len(_stored(db_path, "zeros")) >= 40 and len(_stored(db_path, "ranked")) >= 40, 120,
                   "40 results of each workload")
        wait_until(lambda: _events(db_path, "threshold") and _events(db_path, "threshold_clear"), 60,
                   "a zero seen and gone on mcu-1")

        for node, label, score, outputs, _ in _stored(db_path, "zeros"):
            values = json.loads(outputs)["out"]
            assert node == "mcu-1" and len(values) == 10
            assert values[label] == max(values) and abs(values[label] - score) < 1e-4
        for node, label, score, outputs, _ in _stored(db_path, "ranked"):
            top = json.loads(outputs)["top"]
            assert node == "pi-1" and len(top) == 3 and top[0][0] == label
            assert [name for _, _, name in top] == [str(i) for i, _, _ in top]   # digits' class names
            assert top[0][1] >= top[1][1] >= top[2][1]

        raised = _events(db_path, "threshold")
        assert all(node == "mcu-1" and level == "warn" for node, level, _ in raised)
        crossing = json.loads(raised[0][2])
        assert crossing["wl"] == "zeros" and crossing["index"] == 0 and crossing["value"] > 0.5
        # The stored result at that input says the same value.
        assert any(json.loads(o)["out"][0] == crossing["value"] for _, _, _, o, _ in _stored(db_path, "zeros"))

        pins = open(os.path.join(fleet.flash_dir("mcu-1"), "gpio.log")).read().split("\n")
        levels = [line.split()[:2] for line in pins if line]
        assert levels[:2] == [["2", "1"], ["2", "0"]], levels
        assert all(a[1] != b[1] for a, b in zip(levels, levels[1:])), "a level driven twice in a row"
    finally:
        fleet.stop()
        controller.stop()


def test_a_spec_the_model_cannot_meet_is_refused_before_anything_runs(tmp_path):
    from edgefleet.controller.errors import ConfigError
    from edgefleet.controller.fleet import fleetfile
    text = '[[workload]]\nid = "w"\nmodel = "digits_dense"\nrate = 1\noutput = { watch = { index = 12, above = 1 } }\n'
    with pytest.raises(ConfigError, match=r"workload\[0\] \(w\): output.watch.index must be an integer from 0 to 9"):
        fleetfile.parse(text, models.manifests())
    text = '[[workload]]\nid = "w"\nmodel = "digits_dense"\nrate = 1\noutput = { kind = "values", pin = 4 }\n'
    with pytest.raises(ConfigError, match="output.pin needs output.watch"):
        fleetfile.parse(text, models.manifests())
    good = fleetfile.parse('[[workload]]\nid = "w"\nmodel = "digits_dense"\nrate = 1\noutput = { top_k = 3 }\n',
                           models.manifests())
    assert good[0]["output"] == {"top_k": 3}
    assert "top_k = 3" in fleetfile.dump(good)
