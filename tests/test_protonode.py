"""The protocol-level simulated node (controller/sim/protonode.py): held to the protocol's
vectors, and a fleet of them through a real mosquitto and the real controller."""
import json
import os
import time

import pytest

from edgefleet import models
from edgefleet.controller.fleet.service import ControllerService
from edgefleet.controller.sim.protofleet import ProtoFleet
from edgefleet.controller.sim.protonode import ProtoNode
from edgefleet.controller.sim.waiting import poll
from edgefleet.controller.store import open_registry
from edgefleet.firmware import protocol

VECTORS = os.path.join(os.path.dirname(__file__), "vectors", "messages.json")


def test_the_simulated_node_takes_what_the_vectors_say_a_node_takes():
    """Every controller-to-node vector: a valid one is taken, an invalid one counted as bad."""
    with open(VECTORS) as f:
        vectors = [v for v in json.load(f)["messages"] if v["kind"] in ("assign", "ack", "cmd", "lease", "ctrl_status")]
    node = ProtoNode("mcu-1", "127.0.0.1", 1)
    checked = set()
    for vec in vectors:
        topic = {"lease": protocol.lease_topic("ef"), "ctrl_status": protocol.ctrl_topic("ef")}.get(
            vec["kind"], protocol.node_topic("ef", "mcu-1", vec["kind"]))
        before = node.stats.bad_messages
        node._on_message(topic, vec["payload"].encode(), False, 1)
        assert node.stats.bad_messages == before + (0 if vec["valid"] else 1), vec
        checked.add((vec["kind"], vec["valid"]))
    assert {("assign", True), ("assign", False), ("ack", True), ("ack", False), ("cmd", True)} <= checked


def test_what_the_simulated_node_sends_is_what_the_schemas_allow():
    node = ProtoNode("mcu-1", "127.0.0.1", 1)
    node._on_assign({"v": 1, "epoch": 5, "wl": [{"id": "w", "model": "digits_dense", "rate": 2.0,
                                                  "input": {"kind": "samples", "start": 40, "until": 42}}]})
    node._make_result("w", node.workloads["w"])
    node._make_result("w", node.workloads["w"])
    node.lease_seen = True
    for kind, payload in (("hello", node._hello()), ("status", node._status("offline")), ("hb", node._heartbeat()),
                          ("result", node.outbox[1][0]), ("result", node.outbox[2][0])):
        protocol.decode(kind, payload)
    assert [json.loads(node.outbox[s][0])["in"] for s in (1, 2)] == [40, 41]
    hb = json.loads(node._heartbeat())
    assert hb["outbox"]["oldest"] == [1, 1] and hb["wl"] == [{"id": "w", "state": "running", "n": 2, "err": None}]
    node._on_ack({"v": 1, "boot": 1, "seq": 1})
    assert list(node.outbox) == [2] and node.stats.results_acked == 1
    node._on_assign({"v": 1, "epoch": 4, "wl": []})   # an older epoch changes nothing
    assert list(node.workloads) == ["w"]


@pytest.mark.e2e
def test_a_simulated_fleet_through_mosquitto_and_the_controller(mosquitto, tmp_path):
    """60 simulated nodes: placed, results stored once and acknowledged; a node killed without
    DISCONNECT is marked offline by its Last Will; a controller restart loses nothing."""
    db = str(tmp_path / "fleet.db")
    workloads = [{"id": "w", "model": "digits_dense", "rate": 2, "replicas": 60}]
    prefix = "ps%d" % os.getpid()
    service = ControllerService(mosquitto.host, mosquitto.port, db_path=db, prefix=prefix,
                                manifests=models.manifests(), workloads=workloads, ctrl_id="ctl-a").start()
    fleet = ProtoFleet(60, mosquitto.host, mosquitto.port, prefix=prefix, ramp_s=1.0).start()
    try:
        assert poll(lambda: fleet.stats.results_acked >= 300, timeout=20), vars(fleet.stats)
        fleet.crash("sim-7", down_s=3)
        assert poll(lambda: any(n["id"] == "sim-7" and n["state"] == "offline" for n in service.snapshot()["nodes"]),
                     timeout=10)
        service.stop()           # the controller away: nodes keep making results into their outboxes
        time.sleep(2)
        service = ControllerService(mosquitto.host, mosquitto.port, db_path=db, prefix=prefix,
                                    manifests=models.manifests(), workloads=workloads, ctrl_id="ctl-a").start()
        made = fleet.stats.results_made
        assert poll(lambda: fleet.stats.results_acked >= made and fleet.outbox_records() < 60 * 3, timeout=30), (
            made, vars(fleet.stats))
    finally:
        try:
            fleet.stop()
        finally:
            service.stop()
    registry = open_registry(db, readonly=True)
    stored = {tuple(r) for r in registry.db.execute("SELECT node, boot, seq FROM results")}
    events = registry.events(node_id="sim-7", kinds=["node_offline"])
    registry.close()
    assert fleet.stats.bad_messages == 0
    # Every result the nodes made was stored or is still in an outbox, waiting for its ack.
    made = fleet.made()
    assert len(made) == fleet.stats.results_made and stored <= made
    assert made - stored <= fleet.held(), sorted(made - stored - fleet.held())[:5]
    assert [e["msg"] for e in events][:1] == ["sim-7 is offline"], events   # the will's, not silence's
