"""Fencing end to end: a node silently cut off from the broker loses the controller's lease; its
workload moves to another node; when the link returns the node holds its results (they stay in
its outbox) until the controller has re-confirmed its assignment, and the results it made past
the hand-over point are never stored. Real CPython nodes, real mosquitto, a TCP proxy that stops
carrying bytes (controller/sim/linkproxy.py)."""
import json
import sqlite3
import threading
import time

import paho.mqtt.client as mqtt
import pytest

from edgefleet import models
from edgefleet.controller.sim.linkproxy import LinkProxy
from edgefleet.controller.fleet.service import ControllerService
from edgefleet.controller.sim.simfleet import SimFleet
from support.waiting import wait_until

pytestmark = pytest.mark.e2e

WORKLOAD = {"id": "w", "model": "digits_dense", "rate": 10.0, "replicas": 1, "input": {"kind": "samples"}}
CUT_S = 12


class Tap:
    """Every message on the two nodes' topics, with when it passed the broker."""

    def __init__(self, broker):
        self.seen = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="fence-tap")
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.subscribe("ef/node/+/+", qos=1)
        self.client.loop_start()

    def _on_message(self, client, userdata, message):
        if message.retain:
            return
        with self.lock:
            self.seen.append((time.monotonic(), message.topic, json.loads(message.payload)))

    def after(self, since, topic):
        with self.lock:
            return [(t, m) for t, tp, m in self.seen if t >= since and tp == topic]

    def stop(self):
        self.client.loop_stop()
        self.client.disconnect()


def test_a_cut_off_node_is_fenced_and_its_results_past_the_handover_are_not_stored(mosquitto, tmp_path):
    db_path = str(tmp_path / "fleet.db")
    root = str(tmp_path / "fleet")
    proxy = LinkProxy(mosquitto.port).start()
    tap = Tap(mosquitto)
    controller = ControllerService(mosquitto.host, mosquitto.port, db_path=db_path, manifests=models.manifests(),
                                   workloads=[WORKLOAD], settings={"handover_lead_s": 1.0}).start()
    cut_fleet = SimFleet(root, mosquitto.host, proxy.port, [("pi-cut", "rpi4")], keepalive=2)
    ok_fleet = SimFleet(root, mosquitto.host, mosquitto.port, [("pi-ok", "rpi4")], keepalive=2)
    try:
        cut_fleet.start()
        wait_until(lambda: controller.snapshot() and controller.snapshot()["workloads"][0]["results"] >= 20, 60,
                   "results from pi-cut")
        ok_fleet.start()
        wait_until(lambda: len(controller.snapshot()["nodes"]) == 2, 30, "pi-ok registered")
        assert controller.snapshot()["workloads"][0]["nodes"] == ["pi-cut"]

        proxy.cut()
        cut_at = time.monotonic()
        wait_until(lambda: controller.snapshot()["workloads"][0]["nodes"] == ["pi-ok"] and not controller.snapshot()["moves"],
                   20, "the workload moved to pi-ok")
        time.sleep(max(0.0, CUT_S - (time.monotonic() - cut_at)))
        restored_at = time.monotonic()
        proxy.restore()

        def cut_node_delivering():
            return tap.after(restored_at, "ef/node/pi-cut/result")
        wait_until(cut_node_delivering, 30, "pi-cut delivering its outbox again")
        time.sleep(3)
        # While it was fenced the node said so in its heartbeats, and published no result
        # before the controller's assignment (sent after the lease returned) re-confirmed it.
        fenced_hbs = [t for t, m in tap.after(restored_at, "ef/node/pi-cut/hb") if m.get("fenced")]
        assert fenced_hbs, "pi-cut never reported itself fenced"
        first_result = tap.after(restored_at, "ef/node/pi-cut/result")[0][0]
        confirms = [t for t, m in tap.after(fenced_hbs[0], "ef/node/pi-cut/assign") if m["wl"] == []]
        assert confirms and confirms[0] <= first_result, (confirms, first_result)
        # Its results past the hand-over point are dropped, the ones before it are stored: each
        # input position once, from its owner.
        db = sqlite3.connect(db_path)
        try:
            (handover,) = db.execute("SELECT start FROM streams WHERE workload='w' AND node='pi-ok'").fetchone()
            accepted = db.execute("SELECT pos, node FROM accepted WHERE workload='w' ORDER BY pos").fetchall()
            kinds = [r[0] for r in db.execute("SELECT kind FROM events WHERE node='pi-cut'")]
        finally:
            db.close()
        positions = [p for p, _ in accepted]
        assert positions == list(range(0, positions[-1] + 1))
        assert {n for p, n in accepted if p < handover} == {"pi-cut"}
        assert {n for p, n in accepted if p >= handover} == {"pi-ok"}
        cut_sent = [m["in"] for _, m in tap.after(restored_at, "ef/node/pi-cut/result")]
        assert any(p >= handover for p in cut_sent), "pi-cut made no results while cut off"
        assert controller.snapshot()["dropped"]["out_of_range"] >= sum(1 for p in cut_sent if p >= handover) > 0
        assert "fenced" in kinds and "unfenced" in kinds, kinds
    finally:
        cut_fleet.stop()
        ok_fleet.stop()
        controller.stop()
        tap.stop()
        proxy.stop()
