"""Availability under faults, the controller's side (docs/reliability.md), on a simulated clock:
each test is a cause found by a chaos run, and fails on the controller that had it."""
import json
import time

from edgefleet.controller.fleet.controller import FleetController
from edgefleet.controller.store import open_registry

from test_migration import MANIFESTS, WL, Clock, hb, hello, running, sims  # noqa: F401 (sims: a fixture)


def lease_echo(ctl):
    return ctl.handle("ef/ctrl/lease", json.dumps({"v": 1, "ctrl": ctl.ctrl_id, "seq": 1}))


def offline_events(registry):
    return [e["node"] for e in registry.events(limit=10000) if e["kind"] == "node_offline"]


def test_replicas_of_one_workload_never_move_onto_one_node(sims):
    """Two nodes hosting the two replicas die in the same tick, one node is left: one replica
    moves there, the other waits - both on one node would leave one lane unserved."""
    sim = sims([("a", "rpi4"), ("b", "rpi4"), ("c", "rpi4")], [dict(WL, replicas=2)])
    sim.second()
    hosts = sorted(n for _, n in sim.registry.placements())
    spare = ({"a", "b", "c"} - set(hosts)).pop()
    for _ in range(30):   # the two hosts go silent together (past the partition hold); the spare lives
        sim.second(alive=[spare])
    moves = list(sim.ctl.moves.values())
    assert [m.dst for m in moves] == [spare], [m.as_dict() for m in moves]
    assert sim.ctl.stuck["w"].startswith("no node can take it"), sim.ctl.stuck


def test_resume_positions_survive_a_controller_restart(sims):
    sim = sims([("a", "rpi4")], [WL])
    for pos in range(40):
        sim.emit("a", pos)
    sim.effects += sim.ctl.handle("ef/node/a/hello", hello("a", boot=2))   # a rebooted: it resumes at input 40
    assert sim.assigned("a")["w"]["input"]["start"] == 40
    # The controller restarts; the next assignment it sends a (here: on a fenced heartbeat) must
    # still carry the resume position, not the stretch's start (0).
    restarted = FleetController(sim.registry, manifests=MANIFESTS, clock=sim.clock)
    effects = restarted.handle("ef/node/a/hb", hb("a", 1, boot=2, fenced=True, wl=[running()]))
    (assign,) = [json.loads(e.payload) for e in effects if e.topic == "ef/node/a/assign"]
    assert assign["wl"][0]["input"]["start"] == 40, assign


def test_moves_and_drains_survive_a_controller_restart(sims):
    sim = sims([("a", "rpi4"), ("b", "rpi4")], [WL])
    (src,) = [n for _, n in sim.registry.placements()]
    dst = "b" if src == "a" else "a"
    sim.ctl.operator._op_drain(src)
    sim.second()
    (move,) = sim.ctl.moves.values()
    restarted = FleetController(sim.registry, manifests=MANIFESTS, clock=sim.clock)
    assert src in restarted.draining
    (again,) = restarted.moves.values()
    assert (again.src, again.dst, again.handover, again.state) == (move.src, move.dst, move.handover, move.state)
    restarted.handle("ef/node/%s/hb" % dst, hb(dst, 50, wl=[running()]))
    restarted.handle("ef/node/%s/hb" % src, hb(src, 50, wl=[running(state="done")]))
    assert sim.registry.placements() == [("w", dst)] and not restarted.moves


def test_a_reboot_whose_hello_was_lost_is_seen_in_its_heartbeat(sims):
    sim = sims([("a", "rpi4")], [WL])
    for pos in range(25):
        sim.emit("a", pos)
    effects = sim.ctl.handle("ef/node/a/hb", hb("a", 1, boot=2))
    assert sim.registry.node("a")["boot"] == 2
    (assign,) = [json.loads(e.payload) for e in effects if e.topic == "ef/node/a/assign"]
    assert assign["wl"][0]["input"]["start"] == 25, assign


def test_verdicts_wait_while_the_controllers_own_lease_does_not_come_back():
    """A frozen broker silences every node and the controller's own lease alike: nobody is
    declared dead; once the lease is back, silence from before is not held against the nodes."""
    registry = open_registry(":memory:")
    clock = Clock()
    ctl = FleetController(registry, manifests=MANIFESTS, clock=clock, link_watch=True)
    nodes = ("a", "b", "c")
    for node in nodes:
        ctl.handle("ef/node/%s/hello" % node, hello(node))
    seq = [0]

    def seconds(count, heard, echo=True):
        for _ in range(count):
            clock.now += 1
            seq[0] += 1
            if echo:
                lease_echo(ctl)
            for node in heard:
                ctl.handle("ef/node/%s/hb" % node, hb(node, seq[0]))
            ctl.tick()

    seconds(5, nodes)
    seconds(15, (), echo=False)   # the broker freezes: no heartbeats, no lease echo
    assert offline_events(registry) == []
    assert any(e["kind"] == "verdicts_held" for e in registry.events(limit=100))
    seconds(3, nodes)             # it thaws
    seconds(8, ("a", "c"))        # now only b is silent: that is b's fault
    assert offline_events(registry) == ["b"]
    registry.close()


def test_most_of_the_fleet_silent_at_once_is_a_partition_until_the_hold_runs_out(sims):
    sim = sims([("a", "rpi4"), ("b", "rpi4"), ("c", "rpi4"), ("d", "rpi4")], [WL])
    for _ in range(5):
        sim.second()
    for _ in range(12):
        sim.second(alive=["a"])
    assert offline_events(sim.registry) == [], "three of four nodes silent at once were called dead"
    for _ in range(15):
        sim.second(alive=["a"])
    assert sorted(offline_events(sim.registry)) == ["b", "c", "d"]


def test_a_node_back_from_silence_in_safe_mode_stays_safe_and_its_work_moves(sims):
    sim = sims([("a", "rpi4"), ("b", "rpi4")], [WL])
    (host,) = [n for _, n in sim.registry.placements()]
    other = "b" if host == "a" else "a"
    for _ in range(8):
        sim.second(alive=[other])
    assert sim.registry.node(host)["state"] == "offline"
    sim.ctl.handle("ef/node/%s/hb" % host, hb(host, 99, boot=1).replace('"wl": []', '"wl": [], "state": "safe"'))
    assert sim.registry.node(host)["state"] == "safe"
    assert sim.ctl.snapshot()["nodes"][[n["id"] for n in sim.ctl.snapshot()["nodes"]].index(host)]["state"] == "safe"


def test_safe_mode_is_a_migration_trigger(sims):
    sim = sims([("a", "rpi4"), ("b", "rpi4")], [WL])
    (host,) = [n for _, n in sim.registry.placements()]
    other = "b" if host == "a" else "a"
    sim.ctl.handle("ef/node/%s/status" % host, json.dumps({"v": 1, "node": host, "state": "safe", "boot": 1}))
    sim.second()
    (move,) = sim.ctl.moves.values()
    assert (move.src, move.dst, move.reason) == (host, other, "safe mode")


def test_a_move_whose_target_dies_is_replanned_at_once_and_may_go_back(sims):
    sim = sims([("a", "rpi4"), ("b", "rpi4"), ("c", "rpi4")], [WL])
    (src,) = [n for _, n in sim.registry.placements()]
    for _ in range(8):    # the host dies; its workload moves to a live node
        sim.second(alive=[n for n in "abc" if n != src])
    (move,) = sim.ctl.moves.values()
    dst = move.dst
    last = ({"a", "b", "c"} - {src, dst}).pop()
    for _ in range(8):    # the target dies too before it ran the workload
        sim.second(alive=[last])
    # Re-planned at once: the workload went to the one node left (a move, or a fresh placement
    # since the dead first host had lost it already).
    where = [m.dst for m in sim.ctl.moves.values()] + [n for _, n in sim.registry.placements()]
    assert set(where) == {last}, "the move to the dead %s was not re-planned: %s" % (dst, where)
    aborted = [e for e in sim.registry.events(limit=1000) if e["kind"] == "move_aborted"]
    assert aborted and "went offline" in aborted[-1]["msg"]
    # The first host was not to blame for the aborted move: it is no longer kept off.
    assert ("w", src) not in sim.ctl.cooldown.blocked_targets(sim.clock.now)


def test_the_service_neither_spins_while_the_broker_is_down_nor_marks_nodes_offline_on_reconnect(tmp_path):
    """With mosquitto gone, the controller's thread waits a tick between tries instead of
    spinning; when it is back, nodes that heartbeat again are not declared dead for the outage."""
    import paho.mqtt.client as mqtt
    from edgefleet.controller.broker import MosquittoBroker
    from edgefleet.controller.fleet.service import ControllerService

    broker = MosquittoBroker().start()
    port = broker.port
    service = ControllerService(broker.host, port, db_path=str(tmp_path / "fleet.db"), manifests=MANIFESTS,
                                workloads=[WL], keepalive=2).start()
    node = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="node-a")
    try:
        node.connect(broker.host, port)
        node.loop_start()
        node.publish("ef/node/a/hello", hello("a"), qos=1).wait_for_publish(5)
        for seq in range(1, 6):
            node.publish("ef/node/a/hb", hb("a", seq), qos=0)
            time.sleep(1)
        broker.stop()
        time.sleep(1)
        cpu = time.process_time()
        time.sleep(4)
        used = time.process_time() - cpu
        assert used < 0.6, "the controller used %.2f s of CPU in 4 s with the broker down" % used
        broker = MosquittoBroker(port=port).start()
        deadline = time.monotonic() + 15
        while not service.connected.is_set() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert service.connected.is_set()
        node.reconnect()
        for seq in range(6, 12):
            node.publish("ef/node/a/hb", hb("a", seq), qos=0)
            time.sleep(1)
        snap = service.snapshot()
        assert [n["state"] for n in snap["nodes"]] == ["online"], snap["nodes"]
    finally:
        node.loop_stop()
        service.stop()
        broker.stop()
    registry = open_registry(str(tmp_path / "fleet.db"), readonly=True)
    try:
        assert offline_events(registry) == []
    finally:
        registry.close()
