"""A node whose flash outbox overflows while no broker is reachable: it keeps inferring, drops
its oldest segments whole, says so in its heartbeat, delivers the newest results without a gap,
and the controller stops waiting for the dropped ones. Also: an ack for a result the node never
sent is reported and changes nothing."""
import copy
import json
import os
import threading
import time

import paho.mqtt.client as mqtt
import pytest

from edgefleet import models
from edgefleet.boards import catalog
from edgefleet.controller.install import image
from edgefleet.controller.broker import MosquittoBroker
from edgefleet.controller.netutil import free_port
from edgefleet.controller.fleet.service import ControllerService
from edgefleet.controller.sim.simboard import McuBoard
from edgefleet.controller.sim.simfleet import simulated_heap_bytes
from test_offline import stored, wait_until

pytestmark = pytest.mark.e2e

NODE = "mcu-full"
RATE = 4.0
WORKLOAD = {"id": "mcu", "model": "digits_dense", "rate": RATE, "replicas": 1, "input": {"kind": "samples"},
            "constraints": {"runtime": "micropython"}}
# Three 1 KB segments hold about 15 results (~190 bytes each on flash): seconds of offline running.
TINY_OUTBOX = {"capacity_bytes": 3 * 1024, "segment_bytes": 1024, "flush_records": 4, "flush_ms": 200}
OFFLINE_S = 15


class Observer:
    """Everything published on the node's topics, in arrival order."""

    def __init__(self, broker):
        self.messages = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="observer-" + NODE)
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.subscribe("ef/node/%s/+" % NODE, qos=1)
        self.client.loop_start()

    def _on_message(self, client, userdata, message):
        try:
            msg = json.loads(message.payload)
        except ValueError:
            return
        with self._lock:
            self.messages.append((time.monotonic(), message.topic.rsplit("/", 1)[1], msg))

    def of_kind(self, kind, after=0.0):
        with self._lock:
            return [msg for t, k, msg in self.messages if k == kind and t >= after]

    def stop(self):
        self.client.loop_stop()
        self.client.disconnect()


def write_tiny_outbox_image(flash, broker_port):
    profile = copy.deepcopy(catalog.load("rpi-pico-w"))
    profile["outbox"] = dict(TINY_OUTBOX)
    cfg = image.node_config(NODE, profile, "127.0.0.1", broker_port, simulated=True, keepalive=2)
    image.write_image(flash, cfg, model_names=["digits_dense"])
    # The assignment a previous run cached on flash: the node infers from boot, with no broker.
    os.makedirs(os.path.join(flash, "data"), exist_ok=True)
    spec = {k: WORKLOAD[k] for k in ("id", "model", "rate", "input")}
    with open(os.path.join(flash, "data", "assign.json"), "w") as f:
        json.dump({"v": 1, "epoch": 1, "wl": [spec]}, f)
    return profile


def console(tmp_path):
    with open(str(tmp_path / "console.log")) as f:
        return f.read()[-1500:]


def test_full_outbox_drops_oldest_and_the_fleet_moves_on(tmp_path):
    port = free_port()  # nothing listens here until the broker starts
    flash = str(tmp_path / "flash")
    profile = write_tiny_outbox_image(flash, port)
    db_path = str(tmp_path / "fleet.db")
    board = McuBoard(NODE, flash, simulated_heap_bytes(profile), console_log=str(tmp_path / "console.log"))
    broker = observer = controller = None
    try:
        board.start()
        booted = time.monotonic()
        time.sleep(OFFLINE_S)
        # At RATE results/s for OFFLINE_S the node made ~60 results; its outbox holds ~15.
        broker = MosquittoBroker(port=port).start()
        observer = Observer(broker)
        controller = ControllerService(broker.host, broker.port, db_path=db_path, manifests=models.manifests(),
                                       workloads=[WORKLOAD]).start()
        online = time.monotonic()

        first_hb = wait_until(lambda: (observer.of_kind("hb") or [None])[0], 40,
                              "a heartbeat once the broker is up (console: %s)" % console(tmp_path))
        box = first_hb["outbox"]
        assert first_hb["boot"] == 1
        assert box["dropped"] > 0, "an outbox of %d bytes overflowed without dropping: %s" % (
            TINY_OUTBOX["capacity_bytes"], box)
        assert box["last"][1] >= RATE * OFFLINE_S * 0.5, "the node hardly inferred offline: %s" % box
        assert box["bytes"] <= TINY_OUTBOX["capacity_bytes"], box

        # What arrives is the newest results, from the oldest still on flash on, with no gap:
        # everything before it is what the node counted as dropped.
        wait_until(lambda: len(stored(db_path).get((NODE, 1), [])) >= 10, 30, "results from the node")
        seqs = stored(db_path)[(NODE, 1)]
        first = seqs[0]
        assert first > 1, "the oldest results were not dropped: seq 1 arrived"
        # Every result before the first stored one was counted as dropped: by the first
        # heartbeat's count, or (when the outbox kept overflowing until delivery caught up,
        # as on a loaded machine) by a later heartbeat's.
        wait_until(lambda: max(hb["outbox"]["dropped"] for hb in observer.of_kind("hb")) >= first - 1, 10,
                   "the node counting results 1..%d as dropped (first heartbeat: %s)" % (first - 1, box))
        assert "oldest" not in box or first <= box["oldest"][1], (first, box)

        # The controller skips the dropped range: acks move past it and the outbox trims.
        wait_until(lambda: any(a["seq"] >= first for a in observer.of_kind("ack")), 20,
                   "an ack past the dropped results")

        def trimmed():
            hbs = observer.of_kind("hb")
            recent = hbs[-1]["outbox"] if hbs else {}
            oldest = recent.get("oldest")
            return recent if oldest is None or oldest[1] >= recent["last"][1] - 2 * RATE else None
        settled = wait_until(trimmed, 30, "the outbox trimmed to recent results")
        assert settled["records"] <= 3 * TINY_OUTBOX["segment_bytes"] // 150, settled

        seqs = stored(db_path)[(NODE, 1)]
        assert seqs == list(range(first, seqs[-1] + 1)), "gap after the dropped range: missing %s" % (
            sorted(set(range(first, seqs[-1] + 1)) - set(seqs))[:10])

        # Never stopped inferring: one boot, results at the workload's rate the whole time.
        elapsed = time.monotonic() - booted
        latest = observer.of_kind("hb")[-1]
        assert board.boots == 1 and latest["boot"] == 1
        assert latest["outbox"]["last"][1] >= RATE * elapsed * 0.6, (latest["outbox"], elapsed)
        assert time.monotonic() - online < 90

        # An ack for a result this node never sent: reported, ignored, the node runs on.
        before = len(stored(db_path)[(NODE, 1)])
        acked_at = time.monotonic()
        observer.client.publish("ef/node/%s/ack" % NODE, json.dumps({"v": 1, "boot": 1, "seq": 999999}),
                                qos=1).wait_for_publish(5)
        bad = wait_until(lambda: [e for e in observer.of_kind("event", acked_at) if e["kind"] == "bad_ack"], 10,
                         "a bad_ack event")
        assert bad[0]["data"] == {"boot": 1, "seq": 999999}
        wait_until(lambda: len(stored(db_path)[(NODE, 1)]) >= before + 4 * RATE, 20,
                   "results after the bogus ack")
        wait_until(lambda: observer.of_kind("hb", acked_at + 3), 10, "heartbeats after the bogus ack")
        hb = observer.of_kind("hb", acked_at + 3)[-1]
        # The bogus ack trimmed nothing: delivery stays gap-free after it.
        assert hb["boot"] == 1 and board.boots == 1, hb
        seqs = stored(db_path)[(NODE, 1)]
        assert seqs == list(range(first, seqs[-1] + 1))
    finally:
        board.stop()
        if controller is not None:
            controller.stop()
        if observer is not None:
            observer.stop()
        if broker is not None:
            broker.stop()
