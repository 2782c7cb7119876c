"""Controller replicas on a real mosquitto (MQTT 5 shared subscriptions) and a real PostgreSQL:
the leader killed with SIGKILL while results flow and moves are under way, a leader cut off
past its lease that comes back to find its fencing token stale, and a leader cut off from the
broker only, which lets its lease go."""
import os
import time

import paho.mqtt.client as mqtt
import pytest

from edgefleet.controller import cli
from edgefleet.controller.sim.linkproxy import LinkProxy
from edgefleet.controller.sim.protofleet import ProtoFleet
from edgefleet.controller.sim.replicas import ReplicaProcess
from edgefleet.controller.sim.waiting import poll
from edgefleet.controller.store import open_registry
from edgefleet.firmware import protocol

pytestmark = pytest.mark.e2e

NODES = 30
WORKLOADS = ("w0", "w1", "w2", "w3")
REPLICAS = 5    # lanes per workload: each has nodes to move to


def _holder(url):
    registry = open_registry(url, readonly=True)
    try:
        lease = registry.leadership()
        return lease and (lease["holder"], lease["token"])
    finally:
        registry.close()


class Rig:
    def __init__(self, mosquitto, url, tmp_path, cuttable=()):
        self.url = url
        self.prefix = "rp%d%d" % (os.getpid(), int(time.monotonic() * 1000) % 100000)
        self.broker = "mqtt://%s:%d" % (mosquitto.host, mosquitto.port)
        fleet_file = tmp_path / "fleet.toml"
        fleet_file.write_text("".join('[[workload]]\nid = "%s"\nmodel = "digits_dense"\nrate = 4\nreplicas = %d\n\n'
                                      % (wl, REPLICAS) for wl in WORKLOADS))
        # Replicas named in `cuttable` reach the broker through a link a test can cut.
        self.links = {name: LinkProxy(mosquitto.port).start() for name in cuttable}
        self.replicas = {name: ReplicaProcess(self.links[name].port if name in self.links else mosquitto.port, url,
                                              str(fleet_file), str(tmp_path / (name + ".log")),
                                              name, group=self.prefix, prefix=self.prefix)
                         for name in ("ctl-a", "ctl-b")}
        self.fleet = ProtoFleet(NODES, mosquitto.host, mosquitto.port, prefix=self.prefix, ramp_s=1.0)

    def start(self):
        self.replicas["ctl-a"].start()
        assert poll(lambda: _holder(self.url), timeout=20) == ("ctl-a", 1)
        self.replicas["ctl-b"].start()
        self.fleet.start()
        assert poll(lambda: self.fleet.stats.results_acked >= 200, timeout=30), vars(self.fleet.stats)

    def stop(self):
        try:
            self.fleet.stop()
        finally:   # the replicas are stopped whatever the fleet's end said
            for replica in self.replicas.values():
                if replica.proc is not None and replica.proc.poll() is None:
                    replica.resume()
                replica.stop()
            for link in self.links.values():
                link.stop()

    def read(self, query):
        registry = open_registry(self.url, readonly=True)
        try:
            return [tuple(r.values()) for r in registry.db.execute(query)]
        finally:
            registry.close()

    def move(self, workload, node, source):
        return cli.main(["move", workload, node, "--from", source, "--broker", self.broker, "--prefix", self.prefix,
                         "--wait", "10"])

    def placed(self, workload):
        return {node for (node,) in self.read("SELECT node FROM placements WHERE workload='%s'" % workload)}


def test_the_leader_killed_mid_move_loses_nothing_and_a_follower_continues(mosquitto, postgres_url, tmp_path):
    rig = Rig(mosquitto, postgres_url, tmp_path)
    try:
        rig.start()
        everyone = {"sim-%d" % i for i in range(NODES)}
        busy = {node for (node,) in rig.read("SELECT node FROM placements")}
        # A board holds one model: each move goes to a node with nothing placed (a move onto a
        # node another move is leaving waits for that one to end: tests/test_migration.py).
        free = sorted(everyone - busy, key=lambda n: int(n.split("-")[1]))
        moves = {}
        for wl in WORKLOADS:
            placed = rig.placed(wl)
            assert len(placed) == REPLICAS
            moves[wl] = (min(placed), free.pop(0))
        for wl in WORKLOADS[:3]:
            assert rig.move(wl, moves[wl][1], moves[wl][0]) == 0
        assert rig.read("SELECT COUNT(*) FROM moves") != [(0,)]    # moves under way...
        killed_at = time.monotonic()
        rig.replicas["ctl-a"].kill()                               # ...and their leader gone
        assert poll(lambda: _holder(postgres_url) == ("ctl-b", 2), timeout=10, every=0.05)
        failover_s = time.monotonic() - killed_at
        assert failover_s < 5, failover_s
        # The new leader finishes the moves it found in the registry, and makes new ones.
        assert poll(lambda: rig.read("SELECT COUNT(*) FROM moves") == [(0,)], timeout=30)
        for wl in WORKLOADS[:3]:
            source, target = moves[wl]
            assert target in rig.placed(wl) and source not in rig.placed(wl), (wl, moves[wl], rig.placed(wl))
        assert rig.move("w3", moves["w3"][1], moves["w3"][0]) == 0
        assert poll(lambda: rig.placed("w3") >= {moves["w3"][1]} and moves["w3"][0] not in rig.placed("w3")
                     and rig.read("SELECT COUNT(*) FROM moves") == [(0,)], timeout=30)
        # The nodes stop making results; everything they made is delivered and acknowledged.
        rig.fleet.quiesce()
        assert poll(lambda: rig.fleet.outbox_records() == 0, timeout=40), rig.fleet.outbox_records()
        made = rig.fleet.made()
        stored = set(rig.read("SELECT node, boot, seq FROM results"))
        assert stored <= made
        # 0 lost: a result not stored is one the stream ledger refused because another node was
        # accepted for its position (a move's source inferring past its hand-over point).
        refused = set()
        for node, boot, seq in made - stored:
            wl, pos = rig.fleet.position(node, seq)
            owner = rig.read("SELECT a.node FROM accepted a JOIN streams s ON s.workload=a.workload AND s.lane=a.lane "
                             "WHERE s.workload='%s' AND s.node='%s' AND a.pos=%d" % (wl, node, pos))
            if owner and owner[0][0] != node:
                refused.add((node, boot, seq))
        lost = made - stored - refused
        assert lost == set(), [(k, rig.fleet.position(k[0], k[2])) for k in sorted(lost)] + rig.read(
            "SELECT * FROM streams ORDER BY workload, lane, start") + rig.read(
            "SELECT node, kind, msg FROM events WHERE kind NOT IN ('registered', 'verdicts_held') ORDER BY id")
        assert rig.read("SELECT COUNT(*) FROM (SELECT node, boot, seq FROM results GROUP BY node, boot, seq "
                        "HAVING COUNT(*) > 1) d") == [(0,)]   # 0 stored twice
        # No workload placed twice: each lane one open stretch, each workload's lanes on
        # different nodes, as many placements as declared replicas.
        lanes = rig.read("SELECT workload, lane, COUNT(*) FROM streams WHERE until IS NULL GROUP BY workload, lane")
        assert sorted(lanes) == [(wl, lane, 1) for wl in WORKLOADS for lane in range(REPLICAS)]
        assert rig.read("SELECT workload, COUNT(*) AS lanes, COUNT(DISTINCT node) AS nodes FROM streams WHERE until IS NULL "
                        "GROUP BY workload ORDER BY workload") == [(wl, REPLICAS, REPLICAS) for wl in WORKLOADS]
        assert rig.read("SELECT workload, COUNT(*) FROM placements GROUP BY workload ORDER BY workload") == [
            (wl, REPLICAS) for wl in WORKLOADS]
        # Every stream position accepted once, from one node (the primary key) and in order.
        gaps = rig.read("SELECT workload, lane, COUNT(*) AS n, MAX(pos) - MIN(pos) + 1 AS span FROM accepted GROUP BY workload, lane")
        assert all(count == span for _, _, count, span in gaps), gaps
        assert rig.fleet.stats.bad_messages == 0
    finally:
        rig.stop()


def test_a_leader_cut_off_past_its_lease_cannot_act_when_it_comes_back(mosquitto, postgres_url, tmp_path):
    rig = Rig(mosquitto, postgres_url, tmp_path)
    leases = []
    observer = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="lease-watch-%d" % os.getpid())
    observer.on_message = lambda c, u, m: leases.append((time.monotonic(), protocol.decode("lease", m.payload)["ctrl"]))
    observer.on_connect = lambda c, u, f, rc, p: c.subscribe(protocol.lease_topic(rig.prefix), qos=0)
    observer.connect(mosquitto.host, mosquitto.port)
    observer.loop_start()
    try:
        rig.start()
        old = rig.replicas["ctl-a"]
        old.pause()                                   # cut off: it stands still, its lease runs out
        assert poll(lambda: _holder(postgres_url) == ("ctl-b", 2), timeout=10, every=0.05)
        time.sleep(1)
        resumed = time.monotonic()
        old.resume()                                  # back, believing it leads
        time.sleep(4)
        assert "no longer leads: its fencing token 1 is stale" in old.log()
        assert old.proc.poll() is None                # it follows now, still taking its share
        late = [t for t, ctrl in leases if ctrl == "ctl-a" and t > resumed + 1.0]
        assert late == [], "the stale leader still sent leases"
        assert [ctrl for t, ctrl in leases if t > resumed + 1.0].count("ctl-b") >= 2
        assert _holder(postgres_url) == ("ctl-b", 2)
        acked = rig.fleet.stats.results_acked
        assert poll(lambda: rig.fleet.stats.results_acked > acked + 100, timeout=15)
    finally:
        observer.loop_stop()
        observer.disconnect()
        rig.stop()


def test_a_leader_cut_off_from_the_broker_lets_the_lease_go(mosquitto, postgres_url, tmp_path):
    """The leader loses its broker link (silently, as a network cut) but not the registry: it
    could renew its lease for ever while the fleet hears no leases and no assignments from it.
    Once none of its leases has come back for STEP_DOWN_S (paho still counts the link as up), it
    lets the lease go, claims nothing while its path is in doubt, and the other replica leads;
    back on the network, it follows."""
    rig = Rig(mosquitto, postgres_url, tmp_path, cuttable=("ctl-a",))
    try:
        rig.start()
        cut = time.monotonic()
        rig.links["ctl-a"].cut()
        # STEP_DOWN_S without a lease back (paho would notice the silent link only after 1.5
        # keepalives, 15 s), then the lease's TTL runs out and the other replica claims within
        # half a tick.
        assert poll(lambda: _holder(postgres_url) == ("ctl-b", 2), timeout=40, every=0.1), _holder(postgres_url)
        took_over_s = time.monotonic() - cut
        print("ctl-b leads %.1f s after ctl-a's link was cut" % took_over_s)
        assert "has heard none of its leases back through the broker" in rig.replicas["ctl-a"].log()
        acked = rig.fleet.stats.results_acked
        assert poll(lambda: rig.fleet.stats.results_acked > acked + 100, timeout=20)
        rig.links["ctl-a"].restore()
        time.sleep(3)
        assert _holder(postgres_url) == ("ctl-b", 2), "the old leader took the lease back"
        assert rig.replicas["ctl-a"].proc.poll() is None
        assert took_over_s < 14, took_over_s
    finally:
        rig.stop()

