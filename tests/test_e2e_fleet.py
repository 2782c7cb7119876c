"""End to end: real MicroPython and CPython nodes, a real broker, the controller.

Two MicroPython boards (the unix port at the Pico W's and the ESP32's heap) and one Pi-class
CPython board register, get a workload placed, and deliver inference results; a SIGKILLed
board is reported offline by its Last Will within 1.5 x keepalive. Runs on mosquitto and on
the embedded amqtt broker.
"""
import json
import os
import subprocess
import sys
import threading
import time

import paho.mqtt.client as mqtt
import pytest

from edgefleet import models
from edgefleet.controller.fleet.service import ControllerService
from edgefleet.controller.sim.simfleet import SimFleet
from support.waiting import wait_until

pytestmark = pytest.mark.e2e

KEEPALIVE = 2
LAYOUT = [("mcu-a", "rpi-pico-w"), ("mcu-b", "rpi-pico-w"), ("pi-a", "rpi4")]
WORKLOADS = [
    {"id": "dense-mcu", "model": "digits_dense", "rate": 5.0, "replicas": 2, "input": {"kind": "samples"},
     "constraints": {"runtime": "micropython"}},
    {"id": "dense-pi", "model": "digits_dense", "rate": 20.0, "replicas": 1, "input": {"kind": "samples"},
     "constraints": {"runtime": "cpython"}},
]


class StatusWatcher:
    """Records when each node's retained status last changed, straight from the broker."""

    def __init__(self, broker):
        self.changes = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="status-watcher")
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.subscribe("ef/node/+/status", qos=1)
        self.client.loop_start()

    def _on_message(self, client, userdata, message):
        msg = json.loads(message.payload)
        with self.lock:
            self.changes.append((time.monotonic(), msg["node"], msg["state"]))

    def first(self, node, state, after):
        with self.lock:
            for stamp, n, s in self.changes:
                if n == node and s == state and stamp >= after:
                    return stamp
        return None

    def stop(self):
        self.client.loop_stop()
        self.client.disconnect()


def run_fleet(broker, tmp_path):
    fleet = SimFleet(str(tmp_path / "fleet"), broker.host, broker.port, LAYOUT, keepalive=KEEPALIVE)
    controller = ControllerService(broker.host, broker.port, db_path=str(tmp_path / "fleet.db"),
                                   manifests=models.manifests(), workloads=WORKLOADS)
    watcher = StatusWatcher(broker)
    controller.start()
    fleet.start()
    try:
        def all_online():
            snap = controller.snapshot()
            return snap and len(snap["nodes"]) == 3 and all(n["state"] == "online" for n in snap["nodes"]) and snap

        wait_until(all_online, 60, "three nodes online")

        def results_from_every_node():
            snap = controller.snapshot()
            return all(n["results"] >= 5 for n in snap["nodes"]) and snap

        snap = wait_until(results_from_every_node, 60, "results from every node")
        by_id = {n["id"]: n for n in snap["nodes"]}
        assert by_id["mcu-a"]["runtime"] == "micropython" and by_id["pi-a"]["runtime"] == "cpython"
        assert sorted(by_id["mcu-a"]["workloads"] + by_id["mcu-b"]["workloads"]) == ["dense-mcu", "dense-mcu"]
        assert by_id["pi-a"]["workloads"] == ["dense-pi"]
        # The MicroPython boards run inside their profile's heap and report it in telemetry.
        assert 0 < by_id["mcu-a"]["mem_total"] <= 196608
        assert 0 < by_id["mcu-b"]["mem_total"] <= 196608
        stats = {w["id"]: w for w in snap["workloads"]}
        # Real inference on held-out digits: the model's accuracy shows through.
        for wid in ("dense-mcu", "dense-pi"):
            assert stats[wid]["accuracy"] is not None and stats[wid]["accuracy"] > 0.75, stats[wid]

        killed_at = time.monotonic()
        fleet.board("mcu-b").power_off()
        offline_at = wait_until(lambda: watcher.first("mcu-b", "offline", killed_at), 4 * KEEPALIVE,
                                "mcu-b's Last Will")
        assert offline_at - killed_at <= 1.5 * KEEPALIVE + 0.5, offline_at - killed_at
        wait_until(lambda: {n["id"]: n for n in controller.snapshot()["nodes"]}["mcu-b"]["state"] == "offline",
                   5, "controller marks mcu-b offline")
        # The other nodes keep delivering.
        before = {n["id"]: n["results"] for n in controller.snapshot()["nodes"]}
        wait_until(lambda: all(n["results"] > before[n["id"]] for n in controller.snapshot()["nodes"]
                               if n["id"] != "mcu-b"), 20, "results after the kill")
        return offline_at - killed_at
    finally:
        fleet.stop()
        controller.stop()
        watcher.stop()


def test_fleet_on_mosquitto(mosquitto, tmp_path):
    run_fleet(mosquitto, tmp_path)


def test_fleet_on_embedded_amqtt(amqtt_broker, tmp_path):
    run_fleet(amqtt_broker, tmp_path)


def test_demo_command_prints_a_summary_with_both_runtimes(tmp_path, repo_root):
    env = dict(os.environ, EDGEFLEET_HOME=str(tmp_path))
    proc = subprocess.run([sys.executable, "-m", "edgefleet.controller.cli", "demo", "--nodes", "4",
                           "--duration", "20", "--json"], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(summary["nodes"]) == 4
    assert all(n["state"] == "online" for n in summary["nodes"]), summary["nodes"]
    assert len(summary["workloads"]) >= 1
    runtimes = {n["runtime"] for n in summary["nodes"] if n["results"] > 0}
    assert runtimes == {"micropython", "cpython"}, summary["nodes"]
    assert summary["results_received"] == sum(n["results"] for n in summary["nodes"])
    # Wherever mosquitto runs (as in `make test`), the demo's fleet is a secured one: every link
    # TLS, and no board that cannot hold TLS joins without --insecure-plaintext.
    assert summary["broker"] == "mosquitto" and summary["security"]["tls"], summary["security"]
    assert {n["link"] for n in summary["nodes"]} == {"tls"} and not summary["security"]["plaintext_nodes"]
    assert "esp32" not in {n["board"] for n in summary["nodes"]}


def test_demo_with_insecure_plaintext_lets_the_esp32_join_unencrypted_and_says_so(tmp_path):
    env = dict(os.environ, EDGEFLEET_HOME=str(tmp_path))
    proc = subprocess.run([sys.executable, "-m", "edgefleet.controller.cli", "demo", "--nodes", "3", "--duration", "12",
                           "--insecure-plaintext", "--json"], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    links = {n["board"]: n["link"] for n in summary["nodes"]}
    assert links == {"rpi-pico-w": "tls", "rpi4": "tls", "esp32": "plain"}, summary["nodes"]
    assert summary["security"]["plaintext_nodes"] == ["mcu-esp32-1"]
    assert "PLAINTEXT by --insecure-plaintext: mcu-esp32-1" in summary["security"]["line"]
