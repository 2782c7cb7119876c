"""Offline operation end to end: nodes keep inferring through broker and controller outages and
hard kills, and every result they accepted reaches the registry exactly once."""
import json
import random
import sqlite3
import time

import pytest

from edgefleet import models
from edgefleet.controller.broker import MosquittoBroker
from edgefleet.controller.fleet.service import ControllerService
from edgefleet.controller.sim.simfleet import SimFleet
from support.waiting import wait_until

pytestmark = pytest.mark.e2e

LAYOUT = [("mcu-o", "rpi-pico-w"), ("pi-o", "rpi4")]
WORKLOADS = [
    {"id": "mcu", "model": "digits_dense", "rate": 10.0, "replicas": 1, "input": {"kind": "samples"},
     "constraints": {"runtime": "micropython"}},
    {"id": "pi", "model": "digits_dense", "rate": 20.0, "replicas": 1, "input": {"kind": "samples"},
     "constraints": {"runtime": "cpython"}},
]


def stored(db_path):
    """{(node, boot): sorted list of stored result seqs}."""
    db = sqlite3.connect(db_path)
    try:
        out = {}
        for node, boot, seq in db.execute("SELECT node, boot, seq FROM results ORDER BY node, boot, seq"):
            out.setdefault((node, boot), []).append(seq)
        return out
    finally:
        db.close()


def newest_results(db_path, since):
    """{node: (boot, seq of its newest result, (boot, seq) of its oldest unacknowledged one)}
    from heartbeats received after `since`."""
    db = sqlite3.connect(db_path)
    try:
        out = {}
        for node, telemetry in db.execute("SELECT id, telemetry FROM nodes"):
            telemetry = json.loads(telemetry)
            outbox = telemetry.get("outbox") or {}
            if telemetry.get("at", 0) >= since and "last" in outbox:
                out[node] = tuple(outbox["last"]) + (tuple(outbox.get("oldest") or outbox["last"]),)
        return out
    finally:
        db.close()


def assert_exactly_once(db_path):
    """Every (node, boot) holds results 1..N with no gap: nothing accepted was lost, and the
    primary key (node, boot, seq) makes a stored duplicate impossible."""
    for key, seqs in stored(db_path).items():
        assert seqs == list(range(1, len(seqs) + 1)), "gap in %s: missing %s" % (
            key, sorted(set(range(1, seqs[-1] + 1)) - set(seqs))[:10])


def caught_up(db_path, since):
    """True once every node heartbeats again after `since` and the registry holds its results
    up to what that heartbeat called its newest (less the last second's, still in flight)."""
    newest = newest_results(db_path, since)
    if len(newest) < len(LAYOUT):
        return False
    have = stored(db_path)
    for node, (boot, seq, oldest) in newest.items():
        # The node itself must be (nearly) done: its oldest unacknowledged result is recent.
        if oldest[0] != boot or oldest[1] < seq - 25 or len(have.get((node, boot), [])) < seq - 25:
            return False
    return True


def console(tmp_path, node):
    with open(str(tmp_path / "fleet" / node / "console.log")) as f:
        return f.read()[-3000:]


def start_fleet(broker, tmp_path, db_path):
    controller = ControllerService(broker.host, broker.port, db_path=db_path, manifests=models.manifests(),
                                   workloads=WORKLOADS).start()
    fleet = SimFleet(str(tmp_path / "fleet"), broker.host, broker.port, LAYOUT, keepalive=2).start()
    wait_until(lambda: all(len(stored(db_path).get((n, 1), [])) >= 10 for n, _ in LAYOUT), 60, "results from both nodes")
    return controller, fleet


def test_broker_outage_loses_nothing(tmp_path):
    broker = MosquittoBroker().start()
    db_path = str(tmp_path / "fleet.db")
    controller, fleet = start_fleet(broker, tmp_path, db_path)
    try:
        before = {k: len(v) for k, v in stored(db_path).items()}
        broker.stop()
        time.sleep(15)  # the nodes infer on, with nowhere to send
        broker = MosquittoBroker(port=broker.port).start()
        back = time.time()
        wait_until(lambda: caught_up(db_path, back), 90, "the backlog delivered")
        after = {k: len(v) for k, v in stored(db_path).items()}
        for key in before:
            # 15 s offline at 10 and 20 results/s: the backlog arrived, not just new results.
            assert after[key] - before[key] >= 150, (key, before[key], after[key], newest_results(db_path, back), console(tmp_path, key[0])[-600:])
        assert_exactly_once(db_path)
    finally:
        fleet.stop()
        controller.stop()
        broker.stop()


def test_controller_restart_mid_stream_loses_nothing(mosquitto, tmp_path):
    db_path = str(tmp_path / "fleet.db")
    controller, fleet = start_fleet(mosquitto, tmp_path, db_path)
    try:
        controller.stop()
        # The broker takes results with no controller subscribed: they exist only on flash now.
        time.sleep(8)
        controller = ControllerService(mosquitto.host, mosquitto.port, db_path=db_path, manifests=models.manifests(),
                                       workloads=WORKLOADS).start()
        back = time.time()
        wait_until(lambda: caught_up(db_path, back), 90, "the results published while no controller listened")
        assert_exactly_once(db_path)
        for node, _ in LAYOUT:
            assert len(stored(db_path)[(node, 1)]) >= 100
    finally:
        fleet.stop()
        controller.stop()


def test_hard_kills_at_random_points_lose_no_accepted_result(mosquitto, tmp_path):
    db_path = str(tmp_path / "fleet.db")
    controller, fleet = start_fleet(mosquitto, tmp_path, db_path)
    rng = random.Random(1234)
    try:
        mcu = fleet.board("mcu-o")
        for _ in range(50):
            time.sleep(rng.uniform(0.2, 0.9))
            mcu.reset()  # SIGKILL wherever it is (mid-inference, mid-write, mid-publish), then boot
        pi = fleet.board("pi-o")
        for _ in range(5):
            time.sleep(rng.uniform(1.0, 2.0))
            pi.reset()
        assert mcu.boots == 51 and pi.boots == 6
        back = time.time()
        wait_until(lambda: caught_up(db_path, back), 120, "every boot's results delivered")
        boots = {key[1] for key in stored(db_path) if key[0] == "mcu-o"}
        assert len(boots) >= 40, "results from only %d of the MCU's 51 boots" % len(boots)
        assert_exactly_once(db_path)
    finally:
        fleet.stop()
        controller.stop()
