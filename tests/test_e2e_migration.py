"""Live migration end to end: real CPython nodes (the Pi-class runtime, each model in its own
process), a real mosquitto, the controller service, and the CLI.

One workload is driven through every trigger with the simulation hooks, each time checking it
lands on the node the scoring says: sustained CPU (`edgefleet sim load`), thermal throttling, the
operator's `edgefleet move` onto a battery board, that board's battery under the low watermark,
the node's supervisor reporting `degraded`, `edgefleet drain`, and a SIGKILL. Through all of it,
every input position of the workload's stream is stored exactly once (the registry's `accepted`
and `results` tables are the evidence). Time is compressed through the controller's settings.
"""
import json
import time

import paho.mqtt.client as mqtt
import pytest

from edgefleet import models
from edgefleet.controller.fleet import fleetfile
from edgefleet.controller.fleet.service import ControllerService
from edgefleet.controller.sim.simfleet import SimFleet
from support import registry
from support.waiting import wait_until
from support.cli_process import cli

pytestmark = pytest.mark.e2e

LAYOUT = [("pi-a", "rpi4"), ("pi-b", "rpi4"), ("pi-z", "rpi-zero-2w")]
RATE = 10.0
WORKLOAD = {"id": "w", "model": "digits_dense", "rate": RATE, "replicas": 1, "input": {"kind": "samples"},
            "resources": {"cpu_share": 5}}
SETTINGS = {"cpu_high_for_s": 3.0, "cooldown_s": 4.0, "handover_lead_s": 1.5, "move_timeout_s": 20.0}


def host(controller):
    """The workload's one node once no move is in progress, else None."""
    snap = controller.snapshot()
    if not snap or snap["moves"]:
        return None
    (wl,) = snap["workloads"]
    return wl["nodes"][0] if len(wl["nodes"]) == 1 else None


def moved_off(controller, old, timeout, what):
    return wait_until(lambda: (host(controller) not in (None, old)) and host(controller), timeout, what)


def ledger(db_path):
    accepted, moved = registry.stream_ledger(db_path, "w")
    return accepted, registry.rows(db_path, "SELECT COUNT(*) FROM results WHERE workload='w'")[0][0], moved


def test_every_trigger_moves_the_workload_and_results_stay_exactly_once(mosquitto, tmp_path):
    db_path = str(tmp_path / "fleet.db")
    index = str(tmp_path / "simboards.json")
    fleet = SimFleet(str(tmp_path / "fleet"), mosquitto.host, mosquitto.port, LAYOUT, keepalive=2, index_path=index)
    controller = ControllerService(mosquitto.host, mosquitto.port, db_path=db_path, manifests=models.manifests(),
                                   settings=SETTINGS)
    supervisor = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="fake-supervisor")
    controller.start()
    fleet.start()
    try:
        supervisor.connect(mosquitto.host, mosquitto.port)
        supervisor.loop_start()
        # The workload arrives once every board has reported its power: placed on arrival, it
        # would go to whichever board booted first (triggers, not the planner, move running work).
        wait_until(lambda: controller.snapshot() and len(controller.snapshot()["nodes"]) == 3
                   and all(n["power"] for n in controller.snapshot()["nodes"]), 60, "three nodes with telemetry")
        fleet_file = tmp_path / "fleet.toml"
        fleet_file.write_text(fleetfile.dump([WORKLOAD]))
        broker = "--broker=mqtt://%s:%d" % (mosquitto.host, mosquitto.port)
        cli(tmp_path, "apply", str(fleet_file), broker)
        wait_until(lambda: controller.snapshot()["workloads"] and controller.snapshot()["workloads"][0]["results"] >= 10,
                   60, "first results")
        first = host(controller)
        # Battery-aware placement: a mains Pi 4, not the battery-powered Zero.
        assert first in ("pi-a", "pi-b")
        other = "pi-b" if first == "pi-a" else "pi-a"

        # 1. Sustained CPU over 85%, set from the CLI: to the other mains board, not the Zero.
        cli(tmp_path, "sim", "load", first, "95", "--boards", index)
        assert moved_off(controller, first, 30, "the CPU trigger") == other
        fleet.set_sim(first, load=0)
        time.sleep(SETTINGS["cooldown_s"])

        # 2. Thermal throttling: back to the first board (its cooldown is over).
        fleet.set_sim(other, throttled=True)
        assert moved_off(controller, other, 30, "the thermal trigger") == first
        fleet.set_sim(other, throttled=False)

        # 3. The operator moves it onto the battery board, through the CLI and the broker.
        out = cli(tmp_path, "move", "w", "pi-z", broker)
        assert "moving w from %s to pi-z" % first in out
        assert moved_off(controller, first, 30, "the operator's move") == "pi-z"
        time.sleep(SETTINGS["cooldown_s"])

        # 4. Its battery under the 20% watermark: to a mains board.
        cli(tmp_path, "sim", "battery", "pi-z", "15", "--boards", index)
        on_mains = moved_off(controller, "pi-z", 30, "the battery trigger")
        assert on_mains in ("pi-a", "pi-b")
        time.sleep(SETTINGS["cooldown_s"])

        # 5. The node's supervisor gives up on a child and publishes `degraded`.
        payload = json.dumps({"v": 1, "node": on_mains, "state": "degraded", "boot": 1})
        supervisor.publish("ef/node/%s/status" % on_mains, payload, qos=1, retain=True).wait_for_publish(5)
        spare = "pi-b" if on_mains == "pi-a" else "pi-a"
        assert moved_off(controller, on_mains, 30, "the degraded trigger") == spare
        time.sleep(SETTINGS["cooldown_s"])

        # 6. The operator drains it; the degraded board and the drained one are both out, the
        # Zero's battery is low: nowhere to go, and the reason is shown.
        out = cli(tmp_path, "drain", spare, broker)
        assert "draining %s" % spare in out
        stuck = wait_until(lambda: controller.snapshot()["workloads"][0]["stuck"], 15, "the drain's stuck reason")
        assert "battery" in stuck and "degraded" in stuck, stuck
        supervisor.publish("ef/node/%s/status" % on_mains, json.dumps(
            {"v": 1, "node": on_mains, "state": "online", "boot": 1}), qos=1, retain=True).wait_for_publish(5)
        assert moved_off(controller, spare, 30, "the drain") == on_mains

        # 7. SIGKILL: the Last Will, and the workload runs on the one board left that can take it.
        cli(tmp_path, "drain", spare, "--undo", broker)
        before = controller.snapshot()["workloads"][0]["results"]
        killed_at = time.monotonic()
        fleet.board(on_mains).power_off()
        assert moved_off(controller, on_mains, 20, "failover after SIGKILL") == spare
        wait_until(lambda: controller.snapshot()["workloads"][0]["results"] > before + 20, 30,
                   "results from the replacement")
        failover_s = time.monotonic() - killed_at

        # Exactly once across all seven moves: each position stored once, from one node, no gaps.
        time.sleep(2)
        accepted, stored, moved = ledger(db_path)
        positions = [p for p, _ in accepted]
        assert len(positions) == len(set(positions)) == stored
        assert positions == list(range(positions[0], positions[-1] + 1)), "gap in the stream"
        assert positions[0] == 0
        assert len(moved) == 7, moved
        reasons = [m.rsplit("(", 1)[1].rstrip(")") for m in moved]
        assert [r.split(":")[0] for r in reasons] == ["cpu", "thermal", "operator", "battery", "degraded", "drain", "down"]
        events = cli(tmp_path, "events", "--db", db_path, "--limit", "200")
        assert [line.split()[3] for line in events.splitlines()].count("moved") == 7, events
        print("failover after SIGKILL: %.1f s to 20 results on the replacement" % failover_s)
    finally:
        supervisor.loop_stop()
        supervisor.disconnect()
        fleet.stop()
        controller.stop()
